//! Causal attention of a batch of query tokens over the f16 key/value cache
//! ([`super::kv_cache::KvCache`]), read in place. One token (decoding) and a whole prompt
//! (prefill) take the same path: each query token at position `p` attends over positions
//! `0..=p`, so prefill gives what decoding the prompt token by token gives (within 256
//! positions: past them a decoded token takes llama.cpp's split path, below), and no
//! `(heads, seq, seq)` score matrix or mask is ever built.
//!
//! Each (query token, query head) pair runs llama.cpp's flash attention as its CPU backend
//! computes one query row (`ggml_compute_forward_flash_attn_ext_f16_one_chunk`, the path it
//! takes for batches under 64 tokens; larger batches take its tiled path,
//! [`super::attention_tiled`]), in its AVX2 build's
//! arithmetic: the query rounded to f16, each score a `ggml_vec_dot_f16` (four accumulators of
//! eight lanes, 32 values per step, then its reduction) times the scale, and an online softmax
//! whose weighted sum of values accumulates **in f16**: a new maximum rescales the sum by
//! `exp(old - new)`, every position adds `exp(s - max)` times its value, each step rounded to
//! f16 as llama.cpp's f16 cache makes it. The sum is divided by the softmax's total at the end.
//! One token over more than [`SPLIT_ABOVE`] positions takes llama.cpp's split path instead
//! (`use_split_kv_path`): the positions fall into [`KV_CHUNKS`] chunks, each runs the online
//! softmax on its own, and the chunks' unnormalized sums are merged in order
//! (`ggml_flash_attn_ext_reduce_partials`).
//! Grouped-query attention: query head `h` reads key/value head `h / (n_head / n_kv_head)`.
//! AVX2/FMA/F16C where the CPU has them (checked at run time), plain loops with the same
//! operations elsewhere.

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

/// llama.cpp attends over its cache's cells padded to a multiple of this (the positions past
/// the last one masked), and at least this many.
const CELL_PADDING: usize = 256;
/// A single query token whose padded cells reach twice [`CELL_PADDING`] — more than this many
/// positions — takes llama.cpp's split path.
const SPLIT_ABOVE: usize = CELL_PADDING;
/// The split path gives each of llama.cpp's threads one chunk of the padded cells, so its
/// arithmetic depends on that thread count; this is its default (`GGML_DEFAULT_N_THREADS`,
/// what `llama_context_default_params` and `llama-simple` run with), whatever our own pool's
/// width, so that our output does not depend on ours.
const KV_CHUNKS: usize = 4;

/// ggml's AVX2 f16 vector step: four vectors of eight lanes.
const STEP: usize = 32;
const LANES: usize = 8;

/// `out` (`(seq, n_head, head_dim)`): softmax(q·kᵀ · scale) · v for every query token and
/// head, where `queries` is `(seq, n_head, head_dim)` too (as the query projection gives it)
/// and the cache already holds the `seq` tokens' own keys and values as its last positions.
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
    if seq >= super::attention_tiled::TILE {
        super::attention_tiled::attend(queries, cache, geometry, scale, (seq, out));
        return;
    }
    let first = cache.len - seq;
    let group = (n_head / n_kv_head.max(1)).max(1);
    let vector = Vector::detect();
    let pair = |(i, out): (usize, &mut [f32])| {
        let (t, h) = (i / n_head, i % n_head);
        let len = first + t + 1;
        let query = &queries[i * head_dim..][..head_dim];
        let q: Vec<f32> = query.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        let base = (h / group) * cache.capacity * head_dim;
        let keys = &cache.keys[base..base + len * head_dim];
        let values = &cache.values[base..base + len * head_dim];
        if seq == 1 && len > SPLIT_ABOVE {
            let chunk = len.next_multiple_of(CELL_PADDING) / KV_CHUNKS * head_dim;
            let partials: Vec<Partial> = keys
                .chunks(chunk)
                .zip(values.chunks(chunk))
                .map(|(keys, values)| vector.partial(&q, keys, values, scale))
                .collect();
            merge(&partials, out);
        } else {
            vector.partial(&q, keys, values, scale).finish(out);
        }
    };
    let work = seq * n_head * cache.len;
    if work >= PARALLEL_MIN_WORK && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(head_dim).enumerate().for_each(pair);
    } else {
        out.chunks_mut(head_dim).enumerate().for_each(pair);
    }
}

/// The three vector operations of one query row, in ggml's arithmetic.
trait RowOps {
    /// `q · k`, `ggml_vec_dot_f16` (`q` is f16-exact).
    fn dot(&self, q: &[f32], k: &[u16]) -> f32;
    /// `acc = f16(acc · v)`, `ggml_vec_scale_f16`.
    fn scale(&self, acc: &mut [u16], v: f32);
    /// `acc = f16(x · v + acc)` (one fused multiply-add), `ggml_vec_mad_f16`.
    fn mad(&self, acc: &mut [u16], x: &[u16], v: f32);
}

/// The online softmax of one query row over some positions, before its division by the sum.
#[derive(Debug)]
struct Partial {
    /// The largest score.
    max: f32,
    /// The sum of `exp(score - max)`.
    sum: f32,
    /// The values weighted by `exp(score - max)`, summed in f16 (bits).
    acc: Vec<u16>,
}

impl Partial {
    /// The attention output: the weighted sum divided by the weights' sum.
    fn finish(&self, out: &mut [f32]) {
        let inverse = if self.sum == 0.0 { 0.0 } else { 1.0 / self.sum };
        for (y, a) in out.iter_mut().zip(&self.acc) {
            *y = f16::from_bits(*a).to_f32() * inverse;
        }
    }
}

/// The chunks' partial softmaxes, in order, merged into the attention output as
/// `ggml_flash_attn_ext_reduce_partials` does: in f32, each step rescaling both sides to the
/// larger maximum. GCC fuses each step's first product with its sum (as in `rotate_pair` of
/// the model), so the second product is rounded alone.
fn merge(partials: &[Partial], out: &mut [f32]) {
    let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    out.fill(0.0);
    for partial in partials.iter().filter(|p| p.sum != 0.0) {
        let new_max = max.max(partial.max);
        let (old_scale, new_scale) = ((max - new_max).exp(), (partial.max - new_max).exp());
        for (y, a) in out.iter_mut().zip(&partial.acc) {
            *y = y.mul_add(old_scale, f16::from_bits(*a).to_f32() * new_scale);
        }
        sum = sum.mul_add(old_scale, partial.sum * new_scale);
        max = new_max;
    }
    if sum != 0.0 {
        let inverse = 1.0 / sum;
        out.iter_mut().for_each(|y| *y *= inverse);
    }
}

/// One query row over the keys and values of some positions (`q.len()` values each, one
/// position after another): the online softmax of `ggml_compute_forward_flash_attn_ext_f16`.
#[inline(always)]
fn attend_row<O: RowOps>(ops: &O, q: &[f32], keys: &[u16], values: &[u16], scale: f32) -> Partial {
    let width = q.len();
    let mut acc = vec![0u16; width];
    let (mut sum, mut max) = (0.0f32, f32::NEG_INFINITY);
    for (k, v) in keys.chunks_exact(width).zip(values.chunks_exact(width)) {
        let s = ops.dot(q, k) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > max {
            let old = max;
            max = s;
            ms = (old - max).exp();
            ops.scale(&mut acc, ms);
        } else {
            vs = (s - max).exp();
        }
        ops.mad(&mut acc, v, vs);
        // llama.cpp's `S = S*ms + vs`, which GCC fuses into one multiply-add.
        sum = sum.mul_add(ms, vs);
    }
    Partial { max, sum, acc }
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

    /// One query row (`q` f16-exact) over some positions' keys and values (as wide as `q`).
    fn partial(self, q: &[f32], keys: &[u16], values: &[u16], scale: f32) -> Partial {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(avx2) => avx2.partial(q, keys, values, scale),
            Self::Portable => attend_row(&Portable, q, keys, values, scale),
        }
    }
}

/// The operations as plain loops.
struct Portable;

impl RowOps for Portable {
    fn dot(&self, q: &[f32], k: &[u16]) -> f32 {
        portable_dot(q, k)
    }

    fn scale(&self, acc: &mut [u16], v: f32) {
        for a in acc {
            *a = f16::from_f32(f16::from_bits(*a).to_f32() * v).to_bits();
        }
    }

    fn mad(&self, acc: &mut [u16], x: &[u16], v: f32) {
        for (a, x) in acc.iter_mut().zip(x) {
            let sum = f16::from_bits(*x)
                .to_f32()
                .mul_add(v, f16::from_bits(*a).to_f32());
            *a = f16::from_f32(sum).to_bits();
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
        __m256, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm_loadu_si128, _mm_storeu_si128,
        _mm256_add_ps, _mm256_castps256_ps128, _mm256_cvtph_ps, _mm256_cvtps_ph,
        _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps,
        _mm256_setzero_ps,
    };

    use half::f16;

    use super::{LANES, Partial, Portable, RowOps, STEP, attend_row};

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

        pub(super) fn partial(
            self,
            q: &[f32],
            keys: &[u16],
            values: &[u16],
            scale: f32,
        ) -> Partial {
            // SAFETY: `self` exists only when the CPU has the features.
            unsafe { partial(q, keys, values, scale) }
        }
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn partial(q: &[f32], keys: &[u16], values: &[u16], scale: f32) -> Partial {
        attend_row(&Simd(()), q, keys, values, scale)
    }

    /// The operations on eight lanes at a time; only [`partial`] makes one.
    struct Simd(());

    impl RowOps for Simd {
        #[inline(always)]
        fn dot(&self, q: &[f32], k: &[u16]) -> f32 {
            // SAFETY: a `Simd` exists only inside `partial`, on a CPU with the features.
            unsafe { dot(q, k) }
        }

        #[inline(always)]
        fn scale(&self, acc: &mut [u16], v: f32) {
            let whole = acc.len() - acc.len() % STEP;
            let (vectors, rest) = acc.split_at_mut(whole);
            for chunk in vectors.chunks_exact_mut(LANES) {
                // SAFETY: as in `dot`; the chunk holds eight values.
                unsafe {
                    let product = _mm256_mul_ps(load(chunk, 0), _mm256_set1_ps(v));
                    store(chunk, product);
                }
            }
            Portable.scale(rest, v);
        }

        #[inline(always)]
        fn mad(&self, acc: &mut [u16], x: &[u16], v: f32) {
            let whole = acc.len().min(x.len());
            let whole = whole - whole % STEP;
            let (vectors, rest) = acc.split_at_mut(whole);
            for (i, chunk) in vectors.chunks_exact_mut(LANES).enumerate() {
                // SAFETY: as in `dot`; `x` holds `whole` values, the chunk eight.
                unsafe {
                    let sum =
                        _mm256_fmadd_ps(load(x, i * LANES), _mm256_set1_ps(v), load(chunk, 0));
                    store(chunk, sum);
                }
            }
            Portable.mad(rest, &x[whole..], v);
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

    /// `x` rounded to f16 (to nearest, ties to even) into the eight values of `to`.
    ///
    /// # Safety
    /// F16C available; `to.len() >= 8`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn store(to: &mut [u16], x: __m256) {
        // SAFETY: the caller gives eight values of room.
        unsafe { _mm_storeu_si128(to.as_mut_ptr().cast(), _mm256_cvtps_ph::<0>(x)) }
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
                let q = &queries[(t * g.n_head + h) * g.head_dim..][..g.head_dim];
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
                // (tokens, heads, head_dim), as the projections give them.
                let part = |buffer: &[f32]| -> Vec<f32> {
                    (from..from + count)
                        .flat_map(|t| (0..g.n_kv_head).map(move |h| (h * total + t) * head_dim))
                        .flat_map(|at| buffer[at..at + head_dim].to_vec())
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
                // The values' sum is kept in f16, as llama.cpp keeps it.
                assert!(
                    (got - want).abs() < 2e-3,
                    "{before}+{seq} tokens: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn the_simd_and_portable_rows_agree_bit_for_bit() {
        let q: Vec<f32> = pseudo_random(200, 7)
            .iter()
            .map(|&x| f16::from_f32(x * 3.0).to_f32())
            .collect();
        let keys: Vec<u16> = pseudo_random(2000, 8)
            .iter()
            .map(|&x| f16::from_f32(x * 5.0).to_bits())
            .collect();
        let values: Vec<u16> = pseudo_random(2000, 9)
            .iter()
            .map(|&x| f16::from_f32(x * 2.0).to_bits())
            .collect();
        let vector = Vector::detect();
        // Widths with whole steps and with a scalar tail; one position and several.
        for (width, positions) in [(64, 1), (64, 9), (128, 7), (40, 5), (37, 3)] {
            let n = width * positions;
            let mut simd = vec![f32::NAN; width];
            let mut portable = vec![f32::NAN; width];
            let row = |vector: Vector, out: &mut [f32]| {
                vector
                    .partial(&q[..width], &keys[..n], &values[..n], 0.3)
                    .finish(out)
            };
            row(vector, &mut simd);
            row(Vector::Portable, &mut portable);
            assert_eq!(simd, portable, "{width} x {positions}");
        }
    }

    #[test]
    fn the_value_sum_accumulates_in_f16() {
        // Two positions with equal scores: each value weighs exp(0) = 1, and the running sum
        // 2048 + 1 rounds to 2048 in f16 (its spacing there is 2), so the mean is 1024 where
        // f32 arithmetic would give 1024.5.
        let q = [0.0f32; 32];
        let keys = [0u16; 64];
        let mut values = vec![f16::from_f32(2048.0).to_bits(); 32];
        values.extend(vec![f16::from_f32(1.0).to_bits(); 32]);
        for vector in [Vector::detect(), Vector::Portable] {
            let mut out = [f32::NAN; 32];
            vector.partial(&q, &keys, &values, 1.0).finish(&mut out);
            assert_eq!(out, [1024.0; 32]);
        }
    }

    #[test]
    fn a_token_over_more_than_256_positions_sums_four_chunks_apart() {
        // Equal scores, so every value weighs 1: 2048 first, then ones. Summed in one f16
        // pass each 2048 + 1 rounds back to 2048; over 300 positions (512 padded cells) the
        // chunks of 128 sum apart — 2048 (+ 127 lost), 128, 44 — and merge in f32.
        let g = Geometry {
            n_head: 1,
            n_kv_head: 1,
            head_dim: 32,
        };
        for (positions, kept) in [(256, 2048.0f32), (300, 2220.0)] {
            let mut cache = KvCache::new(1, 32, 1024);
            let mut values = vec![2048.0; 32];
            values.extend(vec![1.0; 32 * (positions - 1)]);
            cache
                .append(&vec![0.0; 32 * positions], &values, positions)
                .expect("append");
            let mut out = vec![f32::NAN; 32];
            attend(&[0.0; 32], &cache.view(), g, 1.0, &mut out);
            assert_eq!(
                out,
                vec![kept * (1.0 / positions as f32); 32],
                "{positions}"
            );
        }
    }

    #[test]
    fn chunks_merge_in_order_and_empty_ones_are_skipped() {
        let partial = |max: f32, sum: f32, acc: f32| Partial {
            max,
            sum,
            acc: vec![f16::from_f32(acc).to_bits()],
        };
        let partials = [
            partial(f32::NEG_INFINITY, 0.0, 0.0),
            partial(0.0, 2.0, 4.0),
            partial(2.0_f32.ln(), 1.0, 3.0),
        ];
        let mut out = [f32::NAN];
        merge(&partials, &mut out);
        // The first chunk with positions scaled by exp(0 - ln 2) = 1/2 (rounded), the second
        // by 1: (4·½ + 3) / (2·½ + 1).
        let half = (0.0 - 2.0_f32.ln()).exp();
        let sum = 2.0f32.mul_add(half, 1.0);
        assert_eq!(out, [4.0f32.mul_add(half, 3.0) * (1.0 / sum)]);
    }
}
