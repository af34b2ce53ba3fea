//! `cairn bench model`: llama-bench-style throughput of the local model. `pp512` processes a
//! 512-token prompt in one batch; `tg128` generates 128 tokens one at a time from an empty
//! context; `tg128 at 512` does the same after a 512-token prompt. Token ids are fixed
//! pseudo-random ids (as llama-bench uses random tokens); each figure is the median of
//! [`REPETITIONS`] runs after a warm-up.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::Error;
use crate::api::{LanguageModel, LoadOptions};
use crate::local::LocalModel;

const PROMPT_TOKENS: usize = 512;
const GENERATED_TOKENS: usize = 128;
const REPETITIONS: usize = 3;

/// Throughput of one model at one thread count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub architecture: String,
    /// Threads of the model's pool (prefill).
    pub threads: usize,
    /// Threads of candle's process-wide quantized-matmul pool, which decodes the formats
    /// without a Cairn kernel (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K decode on `threads`);
    /// see [`crate::threads`].
    pub decode_threads: usize,
    /// Seconds from opening the file to the end of the first evaluation of one token (as
    /// llama.cpp counts its load time).
    pub load_seconds: f64,
    /// Prompt processing, 512 tokens in one batch.
    pub pp512_tokens_per_s: f64,
    /// Generation of 128 tokens from an empty context.
    pub tg128_tokens_per_s: f64,
    /// Generation of 128 tokens after a 512-token prompt.
    pub tg128_at_512_tokens_per_s: f64,
    pub repetitions: usize,
}

/// Loads the model at `model_path` with `threads` threads and measures it.
pub fn run(model_path: &Path, threads: usize) -> Result<BenchReport, Error> {
    let started = Instant::now();
    let options = LoadOptions {
        threads: Some(threads),
        ..LoadOptions::default()
    };
    let model = LocalModel::load(model_path, options, &mut |_| {})?;
    let vocab = model.tokenizer().vocab_size().max(1000) as u64;
    let prompt = pseudo_random_ids(PROMPT_TOKENS, vocab);
    let generated = pseudo_random_ids(GENERATED_TOKENS, vocab);
    // Load time as llama.cpp counts it: to the end of the first evaluation.
    model.forward_for_bench(&prompt[..1], 0)?;
    let load_seconds = started.elapsed().as_secs_f64();

    // Warm-up: first-touch allocations, kernel dispatch tables.
    model.forward_for_bench(&prompt[..16], 0)?;
    model.forward_for_bench(&generated[..1], 16)?;

    let pp = median((0..REPETITIONS).map(|_| {
        let t = Instant::now();
        model.forward_for_bench(&prompt, 0)?;
        Ok(PROMPT_TOKENS as f64 / t.elapsed().as_secs_f64())
    }))?;
    let decode = |start: usize| -> Result<f64, Error> {
        let t = Instant::now();
        for (offset, token) in generated.iter().enumerate() {
            model.forward_for_bench(std::slice::from_ref(token), start + offset)?;
        }
        Ok(GENERATED_TOKENS as f64 / t.elapsed().as_secs_f64())
    };
    let tg = median((0..REPETITIONS).map(|_| {
        // Position 0 resets the cache, so each run starts from an empty context.
        decode(0)
    }))?;
    let tg_at_512 = median((0..REPETITIONS).map(|_| {
        model.forward_for_bench(&prompt, 0)?;
        decode(PROMPT_TOKENS)
    }))?;
    Ok(BenchReport {
        model: model_path.display().to_string(),
        architecture: model.identity().architecture.clone(),
        threads: model.threads(),
        decode_threads: crate::threads::decode_threads(),
        load_seconds,
        pp512_tokens_per_s: pp,
        tg128_tokens_per_s: tg,
        tg128_at_512_tokens_per_s: tg_at_512,
        repetitions: REPETITIONS,
    })
}

fn median(runs: impl Iterator<Item = Result<f64, Error>>) -> Result<f64, Error> {
    let mut values = runs.collect::<Result<Vec<_>, _>>()?;
    values.sort_by(f64::total_cmp);
    Ok(values.get(values.len() / 2).copied().unwrap_or(0.0))
}

/// Deterministic ids in `[100, vocab)` (a linear congruential sequence).
fn pseudo_random_ids(count: usize, vocab: u64) -> Vec<u32> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (100 + (state >> 33) % (vocab - 100)) as u32
        })
        .collect()
}
