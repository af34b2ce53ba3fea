//! Causal attention of a batch of query tokens over the f16 key/value cache
//! ([`super::kv_cache::KvCache`]), read in place. One token (decoding) and a whole prompt
//! (prefill) take the same path: each query token at position `p` attends over positions
//! `0..=p`, so prefill gives what decoding the prompt token by token gives, and no
//! `(heads, seq, seq)` score matrix or mask is ever built (candle's path needed ~10 MB of
//! them per layer for a 512-token prompt, and copied the cache's non-contiguous view of the
//! filled positions at every decoded token).
//!
//! Each (query token, query head) pair takes the dot products with its key/value head's keys,
//! a softmax, and the weighted sum of the values. Grouped-query attention: query head `h`
//! reads key/value head `h / (n_head / n_kv_head)`. As in llama.cpp, whose f16 cache makes it
//! round the query to f16 for the dot products (`ggml_vec_dot_f16`), the query is rounded to
//! f16 and each dot product sums in ggml's AVX2 order: four accumulators of eight lanes, 32
//! values per step, then its reduction. AVX2/FMA/F16C where the CPU has them (checked at run
//! time), plain loops with the same operations elsewhere.

use half::f16;
use rayon::prelude::*;

use super::kv_cache::KvView;

/// The heads' shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// Below this many (query, head) pairs times positions the pairs run on the calling thread:
/// handing one to another thread costs more than its few thousand multiply-adds.
const PARALLEL_MIN_WORK: usize = 128 * 8;

/// ggml's AVX2 dot product step: four vectors of eight lanes.
const STEP: usize = 32;
const LANES: usize = 8;

/// `out` (`(seq, n_head, head_dim)`): softmax(q·kᵀ · scale) · v for every query token and
/// head, where `queries` is `(n_head, seq, head_dim)` and the cache already holds the `seq`
/// tokens' own keys and values as its last positions.
pub(crate) fn attend(
    queries: &[f32],
    cache: &KvView<'_>,
    geometry: Geometry,
    scale: f32,
    out: &mut [f32],
) {
    let Geometry {
        n_head,
        n_kv_head,
        head_dim,
    } = geometry;
    if n_head == 0 || head_dim == 0 {
        return;
    }
    let seq = out.len() / (n_head * head_dim);
    let first = cache.len - seq;
    let group = (n_head / n_kv_head.max(1)).max(1);
    let vector = Vector::detect();
    let pair = |(i, out): (usize, &mut [f32])| {
        let (t, h) = (i / n_head, i % n_head);
        let len = first + t + 1;
        let query = &queries[(h * seq + t) * head_dim..][..head_dim];
        let q: Vec<f32> = query.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        let base = (h / group) * cache.capacity * head_dim;
        let keys = &cache.keys[base..base + len * head_dim];
        let values = &cache.values[base..base + len * head_dim];
        let mut scores = vec![0.0f32; len];
        vector.scores(&q, keys, scale, &mut scores);
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for s in &mut scores {
            *s = (*s - max).exp();
            sum += *s;
        }
        for s in &mut scores {
            *s /= sum;
        }
        vector.weighted_sum(&scores, values, out);
    };
    let work = seq * n_head * cache.len;
    if work >= PARALLEL_MIN_WORK && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(head_dim).enumerate().for_each(pair);
    } else {
        out.chunks_mut(head_dim).enumerate().for_each(pair);
    }
}

/// Which loops this CPU runs.
#[derive(Debug, Clone, Copy)]
enum Vector {
    #[cfg(target_arch = "x86_64")]
    Avx2(avx2::Avx2),
    Portable,
}

impl Vector {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = avx2::Avx2::detect() {
            return Self::Avx2(avx2);
        }
        Self::Portable
    }

    /// `scores[j] = (q · key j) · scale` for the keys one after another (`q.len()` values
    /// each), each dot product in ggml's order (`q` is f16-exact).
    fn scores(self, q: &[f32], keys: &[u16], scale: f32, scores: &mut [f32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(avx2) => avx2.scores(q, keys, scale, scores),
            Self::Portable => {
                for (s, k) in scores.iter_mut().zip(keys.chunks_exact(q.len())) {
                    *s = portable_dot(q, k) * scale;
                }
            }
        }
    }

    /// `out[d] = Σ_j weights[j] · value j [d]`, the values one after another (`out.len()`
    /// each), summed position by position with fused multiply-adds.
    fn weighted_sum(self, weights: &[f32], values: &[u16], out: &mut [f32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(avx2) => avx2.weighted_sum(weights, values, out),
            Self::Portable => {
                out.fill(0.0);
                for (w, v) in weights.iter().zip(values.chunks_exact(out.len())) {
                    for (y, v) in out.iter_mut().zip(v) {
                        *y = w.mul_add(f16::from_bits(*v).to_f32(), *y);
                    }
                }
            }
        }
    }
}

/// `ggml_vec_dot_f16` on AVX2 written out lane by lane: the same fused operations in the same
/// order, so the AVX2 kernel and this give the same bits.
fn portable_dot(q: &[f32], k: &[u16]) -> f32 {
    let n = q.len().min(k.len());
    let whole = n - n % STEP;
    let mut acc = [[0.0f32; LANES]; STEP / LANES];
    for i in (0..whole).step_by(STEP) {
        for (j, lanes) in acc.iter_mut().enumerate() {
            for (l, lane) in lanes.iter_mut().enumerate() {
                let at = i + j * LANES + l;
                *lane = f16::from_bits(k[at]).to_f32().mul_add(q[at], *lane);
            }
        }
    }
    let [a0, a1, a2, a3] = acc;
    let add =
        |x: [f32; LANES], y: [f32; LANES]| -> [f32; LANES] { std::array::from_fn(|l| x[l] + y[l]) };
    let x = add(add(a0, a2), add(a1, a3));
    let t0: [f32; 4] = std::array::from_fn(|l| x[l] + x[l + 4]);
    let mut sum = f64::from((t0[0] + t0[1]) + (t0[2] + t0[3]));
    for at in whole..n {
        sum += f64::from(f16::from_bits(k[at]).to_f32() * q[at]);
    }
    sum as f32
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm_loadu_si128, _mm256_add_ps,
        _mm256_castps256_ps128, _mm256_cvtph_ps, _mm256_extractf128_ps, _mm256_fmadd_ps,
        _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };

    use half::f16;

    use super::{LANES, STEP};

    /// Proof that this CPU has AVX2, FMA and F16C: only [`Avx2::detect`] makes one.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Avx2(());

    impl Avx2 {
        pub(super) fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c"))
            .then_some(Self(()))
        }

        pub(super) fn scores(self, q: &[f32], keys: &[u16], scale: f32, scores: &mut [f32]) {
            // SAFETY: `self` exists only when the CPU has the features.
            unsafe { score_all(q, keys, scale, scores) }
        }

        pub(super) fn weighted_sum(self, weights: &[f32], values: &[u16], out: &mut [f32]) {
            // SAFETY: as in `scores`.
            unsafe { weighted_sum(weights, values, out) }
        }
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn score_all(q: &[f32], keys: &[u16], scale: f32, scores: &mut [f32]) {
        for (s, k) in scores.iter_mut().zip(keys.chunks_exact(q.len())) {
            // SAFETY: the caller's contract.
            *s = unsafe { dot(q, k) } * scale;
        }
    }

    /// Eight f16 values at `k[at..]` as f32.
    ///
    /// # Safety
    /// F16C available; `at + 8 <= k.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load(k: &[u16], at: usize) -> __m256 {
        // SAFETY: the caller keeps the eight values inside `k`.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(at).cast())) }
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot(q: &[f32], k: &[u16]) -> f32 {
        let n = q.len().min(k.len());
        let whole = n - n % STEP;
        let mut acc = [_mm256_setzero_ps(); STEP / LANES];
        let mut i = 0;
        while i < whole {
            for (j, acc) in acc.iter_mut().enumerate() {
                let at = i + j * LANES;
                // SAFETY: `at + 8 <= whole <= n` keeps both loads inside the slices.
                unsafe {
                    *acc = _mm256_fmadd_ps(load(k, at), _mm256_loadu_ps(q.as_ptr().add(at)), *acc);
                }
            }
            i += STEP;
        }
        // GGML_F32x8_REDUCE.
        let x = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
        let t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        let t1 = _mm_hadd_ps(t0, t0);
        let mut sum = f64::from(_mm_cvtss_f32(_mm_hadd_ps(t1, t1)));
        for at in whole..n {
            sum += f64::from(f16::from_bits(k[at]).to_f32() * q[at]);
        }
        sum as f32
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weighted_sum(weights: &[f32], values: &[u16], out: &mut [f32]) {
        let width = out.len();
        let rows = weights.len().min(values.len() / width.max(1));
        let mut d = 0;
        // Four vectors of the output at a time stay in registers over all positions.
        while d + STEP <= width {
            let mut acc = [_mm256_setzero_ps(); STEP / LANES];
            for (j, &w) in weights[..rows].iter().enumerate() {
                let w = _mm256_set1_ps(w);
                for (i, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: `j < rows` and `d + 32 <= width` keep the load inside `values`.
                    *acc = _mm256_fmadd_ps(
                        w,
                        unsafe { load(values, j * width + d + i * LANES) },
                        *acc,
                    );
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                // SAFETY: `d + 32 <= width` keeps the store inside `out`.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(d + i * LANES), *acc) };
            }
            d += STEP;
        }
        while d + LANES <= width {
            let mut acc = _mm256_setzero_ps();
            for (j, &w) in weights[..rows].iter().enumerate() {
                // SAFETY: as above, with `d + 8 <= width`.
                acc = _mm256_fmadd_ps(
                    _mm256_set1_ps(w),
                    unsafe { load(values, j * width + d) },
                    acc,
                );
            }
            // SAFETY: `d + 8 <= width`.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(d), acc) };
            d += LANES;
        }
        for (at, y) in out.iter_mut().enumerate().skip(d) {
            *y = 0.0;
            for (j, &w) in weights[..rows].iter().enumerate() {
                *y = w.mul_add(f16::from_bits(values[j * width + at]).to_f32(), *y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kv_cache::KvCache;

    fn pseudo_random(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// Causal attention written out plainly in f64 over the f16-rounded keys, values and
    /// queries.
    fn reference(
        queries: &[f32],
        keys: &[f32],
        values: &[f32],
        g: Geometry,
        seq: usize,
        scale: f32,
    ) -> Vec<f32> {
        let round = |x: f32| f64::from(f16::from_f32(x).to_f32());
        let total = keys.len() / (g.n_kv_head * g.head_dim);
        let group = g.n_head / g.n_kv_head;
        let mut out = vec![0.0; seq * g.n_head * g.head_dim];
        for t in 0..seq {
            let len = total - seq + t + 1;
            for h in 0..g.n_head {
                let kv = h / group;
                let row = |buffer: &[f32], j: usize| {
                    let start = (kv * total + j) * g.head_dim;
                    buffer[start..start + g.head_dim].to_vec()
                };
                let q = &queries[(h * seq + t) * g.head_dim..][..g.head_dim];
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        let k = row(keys, j);
                        (0..g.head_dim)
                            .map(|d| round(q[d]) * round(k[d]))
                            .sum::<f64>()
                            * f64::from(scale)
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = weights.iter().sum();
                for (j, w) in weights.iter().enumerate() {
                    let v = row(values, j);
                    for d in 0..g.head_dim {
                        out[(t * g.n_head + h) * g.head_dim + d] += (w / sum * round(v[d])) as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn prefill_and_decoding_match_the_plain_computation_with_grouped_heads() {
        // head_dim 40 leaves a remainder after the 32-value steps.
        for (before, seq, head_dim) in [(0, 1, 64), (0, 7, 40), (5, 3, 64), (290, 1, 64)] {
            let g = Geometry {
                n_head: 6,
                n_kv_head: 2,
                head_dim,
            };
            let total = before + seq;
            let keys = pseudo_random(g.n_kv_head * total * head_dim, 2);
            let values = pseudo_random(g.n_kv_head * total * head_dim, 3);
            let mut cache = KvCache::new(g.n_kv_head, head_dim, 1024);
            // Two appends, the way the model fills it: the earlier tokens, then the batch.
            for (from, count) in [(0, before), (before, seq)] {
                let part = |buffer: &[f32]| -> Vec<f32> {
                    (0..g.n_kv_head)
                        .flat_map(|h| {
                            buffer[(h * total + from) * head_dim..][..count * head_dim].to_vec()
                        })
                        .collect()
                };
                cache
                    .append(&part(&keys), &part(&values), count)
                    .expect("append");
            }
            let queries = pseudo_random(g.n_head * seq * head_dim, 1);
            let scale = 1.0 / (head_dim as f32).sqrt();
            let mut out = vec![f32::NAN; seq * g.n_head * head_dim];
            attend(&queries, &cache.view(), g, scale, &mut out);
            let expected = reference(&queries, &keys, &values, g, seq, scale);
            for (got, want) in out.iter().zip(&expected) {
                assert!(
                    (got - want).abs() < 1e-5,
                    "{before}+{seq} tokens: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn the_simd_dot_product_is_ggml_s_order_bit_for_bit() {
        let q: Vec<f32> = pseudo_random(200, 7)
            .iter()
            .map(|&x| f16::from_f32(x * 3.0).to_f32())
            .collect();
        let k: Vec<u16> = pseudo_random(400, 8)
            .iter()
            .map(|&x| f16::from_f32(x * 5.0).to_bits())
            .collect();
        let vector = Vector::detect();
        for n in [32, 64, 96, 128, 40, 200] {
            let (mut simd, mut portable) = ([0.0f32], [0.0f32]);
            vector.scores(&q[..n], &k[..n], 0.5, &mut simd);
            Vector::Portable.scores(&q[..n], &k[..n], 0.5, &mut portable);
            assert_eq!(simd[0].to_bits(), portable[0].to_bits(), "{n}");
        }
        let weights = pseudo_random(5, 9);
        // Widths with whole steps, single vectors and a scalar tail.
        for width in [64, 40, 37] {
            let mut simd = vec![f32::NAN; width];
            let mut portable = vec![f32::NAN; width];
            vector.weighted_sum(&weights, &k[..5 * width], &mut simd);
            Vector::Portable.weighted_sum(&weights, &k[..5 * width], &mut portable);
            assert_eq!(simd, portable, "{width}");
        }
    }
}
