//! Counts the greedy prompts of the reference vectors whose continuation matches llama.cpp's
//! *completely* (every reference token, low-margin positions included), unlike
//! `tests/greedy_vectors.rs`, which stops at the first low-margin token:
//! `cargo run -p cairn-models --release --example greedy_match -- [MODEL] [VECTORS]`
//! (defaults: the default model, `tests/vectors/smollm2-135m-instruct-q4_1.json`).

use std::path::PathBuf;

use anyhow::Context;
use cairn_models::{FinishReason, GenerateParams, LanguageModel, LoadOptions, LocalModel};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model_path = match args.next() {
        Some(path) => path.into(),
        None => cairn_models::default_model_path()?,
    };
    let vectors_path = args.next().map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/vectors/smollm2-135m-instruct-q4_1.json")
        },
        PathBuf::from,
    );
    let text = std::fs::read_to_string(&vectors_path)
        .with_context(|| format!("failed to read {}", vectors_path.display()))?;
    let vectors: serde_json::Value = serde_json::from_str(&text)?;
    let cases = vectors["greedy"]
        .as_array()
        .context("the vectors have no `greedy` array")?;
    let model = LocalModel::load(&model_path, LoadOptions::default(), &mut |_| {})?;
    let mut full = 0;
    for case in cases {
        let prompt = case["prompt"].as_str().context("a prompt")?;
        let expected: Vec<u32> = case["tokens"]
            .as_array()
            .context("tokens")?
            .iter()
            .map(|v| v.as_u64().map(|id| id as u32).context("a token id"))
            .collect::<anyhow::Result<_>>()?;
        let params = GenerateParams {
            max_tokens: expected.len(),
            ..GenerateParams::default()
        };
        let generation = model.generate(prompt, &params, &mut |_| {})?;
        // The end-of-turn token ends generation and is not in token_ids.
        let mut got = generation.token_ids.clone();
        if got.len() < expected.len() && generation.finish_reason == FinishReason::EndOfText {
            got.push(expected[got.len()]);
        }
        let first_difference = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .or((got.len() != expected.len()).then_some(got.len().min(expected.len())));
        match first_difference {
            None => full += 1,
            Some(at) => println!("{prompt:?}: differs from token {at} of {}", expected.len()),
        }
    }
    println!("{full} of {} greedy prompts match completely", cases.len());
    Ok(())
}
