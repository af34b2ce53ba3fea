//! Inference threads. candle's CPU work runs on two kinds of threads:
//!
//! - Dense matrix products (our f32 prefill path, attention) use `gemm` with rayon
//!   parallelism and run on the *current* rayon pool. Cairn runs every forward pass inside
//!   the model's own [`rayon::ThreadPool`] (`pool.install`), sized by
//!   [`crate::LoadOptions::threads`], so prefill uses exactly that many threads and never
//!   competes with the engine's own rayon work.
//! - Quantized matrix-vector products (decoding) run on candle's process-wide "barrier pool",
//!   created on first use with `CANDLE_NUM_THREADS` threads (else `RAYON_NUM_THREADS`, else
//!   the number of physical cores). It cannot be resized afterwards, so a binary that wants a
//!   different decode thread count sets `CANDLE_NUM_THREADS` before loading any model; Cairn
//!   logs a warning when the two counts differ.

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
    let decode_threads = std::env::var("CANDLE_NUM_THREADS")
        .or_else(|_| std::env::var("RAYON_NUM_THREADS"))
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    match decode_threads {
        Some(n) if n != count => tracing::warn!(
            prefill_threads = count,
            decode_threads = n,
            "decode uses candle's process-wide pool sized by CANDLE_NUM_THREADS/RAYON_NUM_THREADS"
        ),
        None if threads.is_some() => tracing::debug!(
            prefill_threads = count,
            "decode uses candle's process-wide pool (one thread per physical core); set \
             CANDLE_NUM_THREADS before loading to change it"
        ),
        _ => {}
    }
    Ok((pool, count))
}
