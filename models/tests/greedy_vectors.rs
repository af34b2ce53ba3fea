//! Greedy decoding of the real default model reproduces llama.cpp's continuations token for
//! token, low-margin positions included: Cairn computes every step in llama.cpp's arithmetic
//! (its AVX2 build's, which the vectors come from), so no token may flip. Past 256 positions
//! too, where llama.cpp's decoding splits the cache into chunks (`smollm2-long-context.json`).

#![allow(clippy::unwrap_used)]

mod common;

use cairn_models::{GenerateParams, LanguageModel, LoadOptions, LocalModel};

#[test]
fn greedy_continuations_match_llama_cpp() {
    let _serial = common::serial();
    let model =
        LocalModel::load(&common::model_path(), LoadOptions::default(), &mut |_| {}).unwrap();
    let vectors = common::vectors();
    let mut failures = Vec::new();
    for case in vectors["greedy"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let expected = common::ids(&case["tokens"]);
        let params = GenerateParams {
            max_tokens: expected.len(),
            ..GenerateParams::default()
        };
        let mut streamed = String::new();
        let generation = model
            .generate(prompt, &params, &mut |piece| streamed.push_str(piece))
            .unwrap();
        assert_eq!(
            streamed, generation.text,
            "streamed text equals the final text"
        );
        // The end-of-turn token ends generation and is not in token_ids.
        let mut got = generation.token_ids.clone();
        if got.len() < expected.len()
            && generation.finish_reason == cairn_models::FinishReason::EndOfText
        {
            got.push(expected[got.len()]);
        }
        let n = expected.len();
        if got.get(..n) != expected.get(..n) {
            failures.push(format!(
                "{prompt:?}: first {n} tokens differ\n  got      {:?}\n  expected {:?}\n  text {:?}",
                &got[..n.min(got.len())],
                &expected[..n],
                generation.text
            ));
        }
        eprintln!("{prompt:?} -> {:?} ({n} tokens compared)", generation.text);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn continuations_past_256_positions_match_llama_cpp() {
    let _serial = common::serial();
    let model =
        LocalModel::load(&common::model_path(), LoadOptions::default(), &mut |_| {}).unwrap();
    let vectors = common::vectors_file("smollm2-long-context.json");
    let mut failures = Vec::new();
    for case in vectors["long"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let expected = case["text"].as_str().unwrap();
        let params = GenerateParams {
            max_tokens: 24,
            ..GenerateParams::default()
        };
        let generation = model.generate(prompt, &params, &mut |_| {}).unwrap();
        assert!(
            generation.prompt_tokens > 200,
            "a long prompt: {}",
            generation.prompt_tokens
        );
        if generation.text != expected {
            failures.push(format!(
                "{} prompt tokens ({:?}…): got {:?}, llama.cpp {expected:?}",
                generation.prompt_tokens,
                prompt.chars().take(40).collect::<String>(),
                generation.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
