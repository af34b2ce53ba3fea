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
//! `CANDLE_NUM_THREADS=1`. rayon's workers sleep soon after running out of work instead; within
//! one forward pass [`install_awake`] keeps them polling, so that the short products of a
//! decoded token do not each wait for a sleeping thread to wake.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// How long a kept-awake thread polls without finding work before it stops polling: longer
/// than any serial step between two products of a decoded token (the attention over a long
/// context, a few hundred microseconds), short enough that an idle pool soon stops burning
/// its cores.
const AWAKE_IDLE: Duration = Duration::from_millis(2);

/// Runs `op` on `pool` while the pool's other threads poll for its work instead of sleeping.
///
/// Decoding one token is a chain of about a hundred short products, each handed to the pool,
/// with serial steps between them (norms, the rotation, the attention over a short context).
/// A rayon worker that finds no work for a few dozen microseconds goes to sleep, and waking
/// it again takes a futex and a scheduling delay: measured on the 0.5B model at two threads,
/// the second thread slept ~80 times per token and two threads decoded only 1.5x as fast as
/// one. (llama.cpp's threads spin between a graph's operations for the same reason.) Here
/// each other thread runs a polling task for the length of `op` — rayon's `yield_now` takes
/// any job the first thread hands out — and stops when `op` returns or after
/// [`AWAKE_IDLE`] without work, so nothing spins between tokens or past a stalled `op`.
/// A one-thread pool runs `op` as `install` does.
pub(crate) fn install_awake<R: Send>(pool: &rayon::ThreadPool, op: impl FnOnce() -> R + Send) -> R {
    if pool.current_num_threads() <= 1 {
        return pool.install(op);
    }
    pool.install(|| {
        let done = Arc::new(AtomicBool::new(false));
        let driver = rayon::current_thread_index();
        let flag = Arc::clone(&done);
        rayon::spawn_broadcast(move |context| {
            if Some(context.index()) != driver {
                poll_for_work(&flag);
            }
        });
        // Set even if `op` panics, so that the pollers stop at once.
        let _stop = SetOnDrop(done);
        op()
    })
}

/// Runs the pool's jobs as they come until `done` is set or none came for [`AWAKE_IDLE`].
fn poll_for_work(done: &AtomicBool) {
    let mut idle_since = Instant::now();
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_since = Instant::now(),
            Some(rayon::Yield::Idle) if idle_since.elapsed() < AWAKE_IDLE => {
                std::hint::spin_loop();
            }
            _ => return,
        }
    }
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work handed out inside `op` is shared with the polling thread, each call gives its
    /// own result, and a poller with no work stops by itself.
    #[test]
    fn the_other_threads_take_work_while_op_runs_and_stop_without_it() {
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        for call in 0..20u64 {
            let sum: u64 = install_awake(&pool, || {
                (0..1000u64).into_par_iter().map(|i| i * call).sum()
            });
            assert_eq!(sum, 499_500 * call);
        }
        let both = install_awake(&pool, || {
            let seen: std::collections::HashSet<Option<usize>> = (0..64)
                .into_par_iter()
                .map(|_| {
                    std::thread::sleep(Duration::from_micros(500));
                    rayon::current_thread_index()
                })
                .collect();
            seen.len()
        });
        assert_eq!(both, 2, "both threads ran the products");
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        assert_eq!(install_awake(&one, || 7), 7);
        let started = Instant::now();
        one.install(|| poll_for_work(&AtomicBool::new(false)));
        assert!(
            started.elapsed() >= AWAKE_IDLE,
            "polled until idle for long enough"
        );
    }
}
