//! Inference threads. candle's CPU work runs on two kinds of threads:
//!
//! - Cairn's own kernels (`model::kernels`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and
//!   Q6_K weights — the default model, and the usual k-quant mixes — in prefill and decoding)
//!   and candle's dense products (attention) run on the *current* rayon pool. Cairn runs every
//!   forward pass inside the model's own [`rayon::ThreadPool`] (`pool.install`), sized by
//!   [`crate::LoadOptions::threads`], so they use exactly that many threads and never compete
//!   with the engine's own rayon work.
//! - Quantized matrix-vector products in the other formats (Q2_K, Q3_K, f16) run on candle's
//!   process-wide "barrier pool", created on first use with `CANDLE_NUM_THREADS` threads (else
//!   `RAYON_NUM_THREADS`, else the number of physical cores). It cannot be resized afterwards,
//!   so a binary that wants a different decode thread count sets `CANDLE_NUM_THREADS` before
//!   loading any model (in `main`, before other threads start); Cairn logs a warning when the
//!   two counts differ.
//!
//! The barrier pool's threads spin while they wait for work. For a model as small as the
//! default one (576-wide matrices) one decode thread is as fast as two on an idle machine
//! and stays fast on a busy one, while two spinning threads fall to a few tokens/s when other
//! processes (builds, tests) compete for the cores. On a shared 2-core machine run with
//! `CANDLE_NUM_THREADS=1`. rayon's workers sleep soon after running out of work instead.

use crate::Error;

/// Builds the pool for one model: `threads` threads, or one per available core.
pub(crate) fn build_pool(threads: Option<usize>) -> Result<(rayon::ThreadPool, usize), Error> {
    let count = threads
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(count)
        .thread_name(|i| format!("cairn-model-{i}"))
        .build()
        .map_err(|source| Error::ThreadPool {
            threads: count,
            source,
        })?;
    let decode = decode_threads();
    if threads.is_some() && decode != count {
        tracing::info!(
            prefill_threads = count,
            decode_threads = decode,
            "decoding formats without a Cairn kernel (Q2_K, Q3_K, f16) uses candle's \
             process-wide pool sized by CANDLE_NUM_THREADS (else RAYON_NUM_THREADS, else \
             physical cores)"
        );
    }
    Ok((pool, count))
}

/// Threads of candle's process-wide pool for quantized decoding in the formats without a
/// Cairn kernel (see the module docs).
pub fn decode_threads() -> usize {
    std::env::var("CANDLE_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(candle_core::utils::get_num_threads)
}
