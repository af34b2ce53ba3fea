//! The tokenizer built from the GGUF metadata reproduces llama.cpp's ids for every reference
//! text exactly, and decoding gives the text back.

#![allow(clippy::unwrap_used)]

mod common;

#[test]
fn tokenizer_matches_llama_cpp_vectors_and_round_trips() {
    let tokenizer = cairn_models::load_tokenizer(&common::model_path()).unwrap();
    let vectors = common::vectors();
    let mut failures = Vec::new();
    let cases = vectors["tokenizer"].as_array().unwrap().iter().map(|case| {
        (
            case["text"].as_str().unwrap().to_string(),
            common::ids(&case["ids"]),
        )
    });
    let prompts = vectors["greedy"].as_array().unwrap().iter().map(|case| {
        (
            case["prompt"].as_str().unwrap().to_string(),
            common::ids(&case["prompt_ids"]),
        )
    });
    for (text, expected) in cases.chain(prompts) {
        let ids = tokenizer.encode(&text).unwrap();
        if ids != expected {
            failures.push(format!(
                "{text:?}\n  got      {ids:?}\n  expected {expected:?}"
            ));
        }
        let decoded = tokenizer.decode(&ids).unwrap();
        if decoded != text {
            failures.push(format!("decode({text:?}) gave {decoded:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
