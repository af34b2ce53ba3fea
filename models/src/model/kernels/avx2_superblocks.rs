//! The AVX2/FMA dot products of the k-quants (Q4_K, Q5_K, Q6_K) against Q8_K activations:
//! the same operations as [`super::superblocks::dot_row`] and ggml's
//! `ggml_vec_dot_q4_K_q8_K`, `…_q5_K_q8_K` and `…_q6_K_q8_K` on AVX2, 64 or 128 weights per
//! step, one row at a time. Where ggml shuffles a sub-block's scale out of a register, these
//! broadcast it from the unpacked scales: the integers are the same, and the integer sums are
//! exact, so the f32 steps (one fused multiply-add per lane and super-block) see the same
//! values. In [`Accumulation::Rows`] order (llama.cpp's repacked Q4_K kernel) the same integer
//! lanes are summed per super-block before the float steps.
//!
//! Unsafe code is limited to what [`super::avx2`] allows: calling functions compiled for CPU
//! features detected at run time, and unaligned loads from slices whose length the indexing
//! checks.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m128, __m128i, __m256i, _mm_add_epi32, _mm_add_ps, _mm_add_ss, _mm_cvtepi32_ps,
    _mm_cvtepu8_epi16, _mm_cvtsi64_si128, _mm_cvtsi128_si32, _mm_cvtss_f32, _mm_fmadd_ps,
    _mm_hadd_epi16, _mm_hadd_epi32, _mm_loadu_si128, _mm_madd_epi16, _mm_movehdup_ps,
    _mm_movehl_ps, _mm_set1_epi16, _mm_set1_ps, _mm_setzero_ps, _mm_setzero_si128,
    _mm_storeu_si128, _mm256_add_epi32, _mm256_and_si256, _mm256_castsi256_si128,
    _mm256_cmpeq_epi8, _mm256_cvtepi8_epi16, _mm256_cvtepi32_ps, _mm256_extracti128_si256,
    _mm256_fmadd_ps, _mm256_hadd_epi32, _mm256_loadu_si256, _mm256_madd_epi16,
    _mm256_maddubs_epi16, _mm256_or_si256, _mm256_set_m128i, _mm256_set1_epi8, _mm256_set1_epi16,
    _mm256_set1_ps, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_slli_epi16, _mm256_slli_epi32,
    _mm256_srli_epi16, _mm256_sub_epi32,
};

use super::activation_k::SuperBlock;
use super::avx2::{Avx2, sum_lanes};
use super::f16_at;
use super::format::{Accumulation, Products};
use super::superblocks::{SuperBlockFormat, scales_and_mins, sub_block_sum, tiled_step};

impl Avx2 {
    /// The product of every whole row of `row_bytes` bytes in `rows` with every token of
    /// `activations` (the tokens one after another, `row_bytes / block_bytes` super-blocks
    /// each), like [`super::superblocks::dot_tile`] and with the same results bit for bit.
    /// Each weight row meets all the tokens while it is in cache.
    pub(crate) fn dot_tile_super(
        self,
        format: SuperBlockFormat,
        accumulation: Accumulation,
        rows: &[u8],
        row_bytes: usize,
        activations: &[SuperBlock],
        out: &mut Products<'_>,
    ) {
        // SAFETY: `self` exists only when the CPU features were detected; the kernels index
        // their slices with checks.
        unsafe { tile(format, accumulation, rows, row_bytes, activations, out) }
    }

    /// [`Avx2::dot_tile_super`] with one token: one result per row.
    #[cfg(test)]
    pub(crate) fn dot_rows_super(
        self,
        format: SuperBlockFormat,
        accumulation: Accumulation,
        rows: &[u8],
        row_bytes: usize,
        activations: &[SuperBlock],
        out: &mut [f32],
    ) {
        let stride = out.len();
        let out = &mut Products {
            values: out,
            stride,
        };
        self.dot_tile_super(format, accumulation, rows, row_bytes, activations, out);
    }
}

/// Tokens per group: each super-block's weights, unpacked once, meet this many tokens.
const TOKENS: usize = 4;

/// [`Avx2::dot_tile_super`] for one format: every row with every token of `activations`
/// (`row_bytes / block_bytes` super-blocks each), the tokens in groups of [`TOKENS`] and the
/// rest one by one.
#[target_feature(enable = "avx2,fma,f16c")]
fn tile(
    format: SuperBlockFormat,
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    activations: &[SuperBlock],
    out: &mut Products<'_>,
) {
    let blocks = row_bytes / format.block_bytes();
    if blocks == 0 {
        return;
    }
    let tokens: Vec<&[SuperBlock]> = activations.chunks_exact(blocks).collect();
    for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
        let mut t = 0;
        while t + TOKENS <= tokens.len() {
            let group: [&[SuperBlock]; TOKENS] = std::array::from_fn(|i| tokens[t + i]);
            let sums = dot(format, accumulation, row, group);
            for (i, sum) in sums.into_iter().enumerate() {
                out.set(r, t + i, sum);
            }
            t += TOKENS;
        }
        for (t, token) in tokens.iter().enumerate().skip(t) {
            let [sum] = dot(format, accumulation, row, [token]);
            out.set(r, t, sum);
        }
    }
}

/// One row with `T` tokens in `format`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot<const T: usize>(
    format: SuperBlockFormat,
    accumulation: Accumulation,
    row: &[u8],
    tokens: [&[SuperBlock]; T],
) -> [f32; T] {
    match format {
        SuperBlockFormat::Q4K => dot_q4k(accumulation, row, tokens),
        SuperBlockFormat::Q5K => dot_q5k(accumulation, row, tokens),
        SuperBlockFormat::Q6K => dot_q6k(accumulation, row, tokens),
    }
}

/// 32 bytes of `bytes` from `at`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load(bytes: &[u8], at: usize) -> __m256i {
    let chunk = &bytes[at..at + 32];
    // SAFETY: the indexing above checked that 32 bytes are readable.
    unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) }
}

/// 32 activations from `at`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load_activations(a: &SuperBlock, at: usize) -> __m256i {
    let chunk = &a.qs[at..at + 32];
    // SAFETY: the indexing above checked that 32 bytes are readable.
    unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) }
}

/// The 16 bytes of `bytes` (exactly 16).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load_16(bytes: &[u8]) -> __m128i {
    let chunk = &bytes[..16];
    // SAFETY: the indexing above checked that 16 bytes are readable.
    unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) }
}

/// The activations' sixteen 16-value sums.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load_sums(a: &SuperBlock) -> __m256i {
    // SAFETY: `sums` is sixteen i16, 32 readable bytes.
    unsafe { _mm256_loadu_si256(a.sums.as_ptr().cast()) }
}

/// `scale * (x · y)` in eight i32 lanes of four products each: `x` unsigned (below 64), `y`
/// signed. No i16 pair sum saturates: 2 * 63 * 127 < 32,767.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scaled_products(x: __m256i, y: __m256i, scale: __m256i) -> __m256i {
    _mm256_madd_epi16(scale, _mm256_maddubs_epi16(x, y))
}

/// The sum of four f32 lanes, as ggml sums Q4_K's offsets.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sum_lanes_4(x: __m128) -> f32 {
    let pair = _mm_add_ps(x, _mm_movehl_ps(x, x));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
}

/// Q4_K (see [`super::superblocks`] for the layout), one row with `T` tokens: each
/// super-block's nibbles and scales are unpacked once for all of them.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_q4k<const T: usize>(
    accumulation: Accumulation,
    row: &[u8],
    tokens: [&[SuperBlock]; T],
) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let mut acc_mins = [_mm_setzero_ps(); T];
    let mut rows = RowSums::<T>::default();
    let bytes = SuperBlockFormat::Q4K.block_bytes();
    for (i, block) in row.chunks_exact(bytes).enumerate() {
        let (d_w, dmin_w) = (f16_at(block, 0), f16_at(block, 2));
        let (scales, mins) = scales_and_mins(&block[4..16]);
        let mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(mins)));
        let weights = q4k_weights(block);
        let scales: [__m256i; 8] = std::array::from_fn(|k| _mm256_set1_epi16(i16::from(scales[k])));
        let d_a: [f32; T] = std::array::from_fn(|t| tokens[t][i].d);
        let mut sums = [_mm256_setzero_si256(); T];
        let mut offsets = [_mm_setzero_si128(); T];
        // Per 64 weights, for the repacked batch order.
        let mut parts = [[_mm256_setzero_si256(); T]; 4];
        for t in 0..T {
            let a = &tokens[t][i];
            // The offsets: each lane two sub-blocks' min × activation sum, as ggml.
            // SAFETY: `sums` is 16 i16, 32 bytes.
            let activation_sums = unsafe { _mm256_loadu_si256(a.sums.as_ptr().cast()) };
            let sub_block_sums = _mm_hadd_epi16(
                _mm256_castsi256_si128(activation_sums),
                _mm256_extracti128_si256::<1>(activation_sums),
            );
            // Lane j: the offsets of the 64 weights 64j..64j + 64.
            offsets[t] = _mm_madd_epi16(mins, sub_block_sums);
            for (j, part) in parts.iter_mut().enumerate() {
                let p_low =
                    scaled_products(weights[2 * j], load_activations(a, 64 * j), scales[2 * j]);
                let p_high = scaled_products(
                    weights[2 * j + 1],
                    load_activations(a, 64 * j + 32),
                    scales[2 * j + 1],
                );
                part[t] = _mm256_add_epi32(p_low, p_high);
                sums[t] = _mm256_add_epi32(sums[t], part[t]);
            }
            if accumulation == Accumulation::Lanes {
                let (d, dmin) = (a.d * d_w, -a.d * dmin_w);
                acc_mins[t] =
                    _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(offsets[t]), acc_mins[t]);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sums[t]), acc[t]);
            }
        }
        match accumulation {
            Accumulation::Lanes => {}
            Accumulation::Rows => {
                rows.add(sums_of(&sums), &d_a, d_w, sums_of_4(&offsets), dmin_w);
            }
            Accumulation::RowsBatched => {
                let offset_parts = offsets.map(|x| i32_lanes_4(x));
                for (j, part) in parts.iter().enumerate() {
                    let offsets = offset_parts.map(|lanes| lanes[j]);
                    rows.add(sums_of(part), &d_a, d_w, offsets, dmin_w);
                }
            }
            Accumulation::Tiled => {
                rows.tiled(sums_of(&sums), &d_a, d_w, sums_of_4(&offsets), dmin_w);
            }
        }
    }
    std::array::from_fn(|t| match accumulation {
        Accumulation::Lanes => sum_lanes(acc[t]) + sum_lanes_4(acc_mins[t]),
        Accumulation::Rows | Accumulation::RowsBatched | Accumulation::Tiled => rows.result(t),
    })
}

/// Q5_K: Q4_K's nibbles plus a fifth bit per weight; one row with `T` tokens.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_q5k<const T: usize>(
    accumulation: Accumulation,
    row: &[u8],
    tokens: [&[SuperBlock]; T],
) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let mut min_sums = [0.0f32; T];
    let mut rows = RowSums::<T>::default();
    let bytes = SuperBlockFormat::Q5K.block_bytes();
    for (i, block) in row.chunks_exact(bytes).enumerate() {
        let (d_w, dmin_w) = (f16_at(block, 0), f16_at(block, 2));
        let (scales, mins) = scales_and_mins(&block[4..16]);
        let weights = q5k_weights(block);
        let scales: [__m256i; 8] = std::array::from_fn(|k| _mm256_set1_epi16(i16::from(scales[k])));
        let d_a: [f32; T] = std::array::from_fn(|t| tokens[t][i].d);
        let mut sums = [_mm256_setzero_si256(); T];
        let mut totals = [0i32; T];
        for t in 0..T {
            let a = &tokens[t][i];
            totals[t] = (0..mins.len())
                .map(|k| i32::from(mins[k]) * sub_block_sum(a, k))
                .sum();
            for j in 0..4 {
                let p_low =
                    scaled_products(weights[2 * j], load_activations(a, 64 * j), scales[2 * j]);
                let p_high = scaled_products(
                    weights[2 * j + 1],
                    load_activations(a, 64 * j + 32),
                    scales[2 * j + 1],
                );
                sums[t] = _mm256_add_epi32(sums[t], _mm256_add_epi32(p_low, p_high));
            }
            if accumulation == Accumulation::Lanes {
                let (d, dmin) = (a.d * d_w, -a.d * dmin_w);
                min_sums[t] = dmin.mul_add(totals[t] as f32, min_sums[t]);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sums[t]), acc[t]);
            }
        }
        match accumulation {
            Accumulation::Lanes => {}
            // Only Q4_K matrices are repacked (`Accumulation::for_matrix`).
            Accumulation::Rows | Accumulation::RowsBatched => {
                rows.add(sums_of(&sums), &d_a, d_w, totals, dmin_w);
            }
            Accumulation::Tiled => rows.tiled(sums_of(&sums), &d_a, d_w, totals, dmin_w),
        }
    }
    std::array::from_fn(|t| match accumulation {
        Accumulation::Lanes => sum_lanes(acc[t]) + min_sums[t],
        Accumulation::Rows | Accumulation::RowsBatched | Accumulation::Tiled => rows.result(t),
    })
}

/// Q6_K: six-bit weights offset by 32, a signed scale per 16; one row with `T` tokens.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_q6k<const T: usize>(
    accumulation: Accumulation,
    row: &[u8],
    tokens: [&[SuperBlock]; T],
) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let mut rows = RowSums::<T>::default();
    let bytes = SuperBlockFormat::Q6K.block_bytes();
    for (i, block) in row.chunks_exact(bytes).enumerate() {
        let d_w = f16_at(block, 208);
        let scales_bytes = &block[192..208];
        let scales = scales_bytes;
        let weights = q6k_weights(block);
        // The first 16 weights of a vector (lanes 0..4) and the next 16 have their own scale.
        let scales: [__m256i; 8] = std::array::from_fn(|k| {
            let group = 2 * k;
            _mm256_set_m128i(
                _mm_set1_epi16(i16::from(scales[group + 1] as i8)),
                _mm_set1_epi16(i16::from(scales[group] as i8)),
            )
        });
        // The offset's scales, one i16 per 16 weights, against the activations' 16-value sums.
        let offset_scales = _mm256_cvtepi8_epi16(load_16(scales_bytes));
        let d_a: [f32; T] = std::array::from_fn(|t| tokens[t][i].d);
        let mut sums = [_mm256_setzero_si256(); T];
        for t in 0..T {
            let a = &tokens[t][i];
            for k in 0..8 {
                let y = load_activations(a, 32 * k);
                let products = _mm256_maddubs_epi16(weights[k], y);
                sums[t] = _mm256_add_epi32(sums[t], _mm256_madd_epi16(scales[k], products));
            }
            // ggml's split of the offset of 32: lane l takes weights 32l..32l + 32's.
            let offsets = _mm256_madd_epi16(load_sums(a), offset_scales);
            sums[t] = _mm256_sub_epi32(sums[t], _mm256_slli_epi32::<5>(offsets));
            if accumulation == Accumulation::Lanes {
                let d = _mm256_set1_ps(a.d * d_w);
                acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sums[t]), acc[t]);
            }
        }
        match accumulation {
            Accumulation::Lanes => {}
            Accumulation::Rows | Accumulation::RowsBatched => {
                rows.add(sums_of(&sums), &d_a, d_w, [0; T], 0.0);
            }
            Accumulation::Tiled => rows.tiled(sums_of(&sums), &d_a, d_w, [0; T], 0.0),
        }
    }
    std::array::from_fn(|t| match accumulation {
        Accumulation::Lanes => sum_lanes(acc[t]),
        Accumulation::Rows | Accumulation::RowsBatched | Accumulation::Tiled => rows.result(t),
    })
}

/// Q4_K's 256 weights of `block` (unsigned, below 16) in order, 32 per vector: sub-block `k`
/// in vector `k`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn q4k_weights(block: &[u8]) -> [__m256i; 8] {
    let low_nibble = _mm256_set1_epi8(0x0F);
    let nibbles = &block[16..144];
    std::array::from_fn(|k| {
        let bits = load(nibbles, 32 * (k / 2));
        let shifted = if k % 2 == 0 {
            bits
        } else {
            _mm256_srli_epi16::<4>(bits)
        };
        _mm256_and_si256(shifted, low_nibble)
    })
}

/// Q5_K's 256 weights of `block` (unsigned, below 32) in order, 32 per vector.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn q5k_weights(block: &[u8]) -> [__m256i; 8] {
    let low_nibble = _mm256_set1_epi8(0x0F);
    let sixteen = _mm256_set1_epi8(16);
    let high_bits = load(block, 16);
    let nibbles = &block[48..176];
    // Bit `k` of every high-bit byte: sub-block `k`'s fifth bits.
    std::array::from_fn(|k| {
        let mask = _mm256_set1_epi8(1 << k);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(high_bits, mask), mask);
        let fifth = _mm256_and_si256(set, sixteen);
        let bits = load(nibbles, 32 * (k / 2));
        let shifted = if k % 2 == 0 {
            bits
        } else {
            _mm256_srli_epi16::<4>(bits)
        };
        _mm256_or_si256(_mm256_and_si256(shifted, low_nibble), fifth)
    })
}

/// Q6_K's 256 weights of `block` as stored (unsigned, below 64: the weight plus 32) in
/// order, 32 per vector.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn q6k_weights(block: &[u8]) -> [__m256i; 8] {
    let low_nibble = _mm256_set1_epi8(0x0F);
    let two_bits = _mm256_set1_epi8(3);
    let pair = |shifted: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(shifted, two_bits));
    // Weights 128n + 32m + l in vector 4n + m.
    std::array::from_fn(|k| {
        let (n, m) = (k / 4, k % 4);
        let low = load(block, 64 * n + 32 * (m % 2));
        let high = load(block, 128 + 32 * n);
        let (low, high) = match m {
            0 => (low, high),
            1 => (low, _mm256_srli_epi16::<2>(high)),
            2 => (_mm256_srli_epi16::<4>(low), _mm256_srli_epi16::<4>(high)),
            _ => (_mm256_srli_epi16::<4>(low), _mm256_srli_epi16::<6>(high)),
        };
        _mm256_or_si256(_mm256_and_si256(low, low_nibble), pair(high))
    })
}

/// The four i32 lanes of `x`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn i32_lanes_4(x: __m128i) -> [i32; 4] {
    let mut lanes = [0i32; 4];
    // SAFETY: `lanes` has room for the 16 bytes.
    unsafe { _mm_storeu_si128(lanes.as_mut_ptr().cast(), x) };
    lanes
}

/// The two f32 sums per token of [`Accumulation::Rows`] (and the one of
/// [`Accumulation::Tiled`]). Each token's sums take the scalar operations of
/// [`super::superblocks`]; written over arrays of tokens, they compile to vector operations
/// whose lanes perform exactly those.
#[derive(Clone, Copy)]
struct RowSums<const T: usize> {
    total: [f32; T],
    offsets: [f32; T],
}

impl<const T: usize> Default for RowSums<T> {
    fn default() -> Self {
        Self {
            total: [0.0; T],
            offsets: [0.0; T],
        }
    }
}

impl<const T: usize> RowSums<T> {
    /// One super-block (or part of one): each token's integer sum with scale
    /// `d = d_w * d_a`, its offsets' integer sum with `dmin = -d_a * dmin_w` (as the lane
    /// kernels take it; negating is exact).
    #[inline(always)]
    fn add(&mut self, sums: [i32; T], d_a: &[f32; T], d_w: f32, offsets: [i32; T], dmin_w: f32) {
        for t in 0..T {
            let (d, dmin) = (d_a[t] * d_w, -d_a[t] * dmin_w);
            self.total[t] = (sums[t] as f32).mul_add(d, self.total[t]);
            self.offsets[t] = (offsets[t] as f32).mul_add(-dmin, self.offsets[t]);
        }
    }

    /// One super-block of [`Accumulation::Tiled`] for each token.
    #[inline(always)]
    fn tiled(&mut self, sums: [i32; T], d_a: &[f32; T], d_w: f32, offsets: [i32; T], dmin_w: f32) {
        for t in 0..T {
            self.total[t] = tiled_step(self.total[t], sums[t], d_w, offsets[t], dmin_w, d_a[t]);
        }
    }

    fn result(&self, t: usize) -> f32 {
        self.total[t] - self.offsets[t]
    }
}

/// Each of `xs`' sum of eight i32 lanes (exact: a super-block's sum stays far below 2^31).
/// Four at once take three horizontal additions instead of eight.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sums_of<const T: usize>(xs: &[__m256i; T]) -> [i32; T] {
    if T == 4 {
        let quads = _mm256_hadd_epi32(
            _mm256_hadd_epi32(xs[0], xs[1]),
            _mm256_hadd_epi32(xs[2], xs[3]),
        );
        // Lane t of each half: token t's sum over that half.
        let four = _mm_add_epi32(
            _mm256_castsi256_si128(quads),
            _mm256_extracti128_si256::<1>(quads),
        );
        let lanes = i32_lanes_4(four);
        std::array::from_fn(|t| lanes[t])
    } else {
        xs.map(|x| sum_i32(x))
    }
}

/// Each of `xs`' sum of four i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sums_of_4<const T: usize>(xs: &[__m128i; T]) -> [i32; T] {
    if T == 4 {
        let four = _mm_hadd_epi32(_mm_hadd_epi32(xs[0], xs[1]), _mm_hadd_epi32(xs[2], xs[3]));
        let lanes = i32_lanes_4(four);
        std::array::from_fn(|t| lanes[t])
    } else {
        xs.map(|x| sum_i32_4(x))
    }
}

/// The sum of eight i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sum_i32(x: __m256i) -> i32 {
    sum_i32_4(_mm_add_epi32(
        _mm256_castsi256_si128(x),
        _mm256_extracti128_si256::<1>(x),
    ))
}

/// The sum of four i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn sum_i32_4(x: __m128i) -> i32 {
    let pairs = _mm_hadd_epi32(x, x);
    _mm_cvtsi128_si32(_mm_hadd_epi32(pairs, pairs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::activation_k::SUPER_BLOCK;
    use crate::model::kernels::superblocks::dot_rows;
    use crate::model::kernels::superblocks::tests::{
        EXTREME_SCALES, FORMATS, activations, random_blocks,
    };

    #[test]
    fn avx2_and_portable_agree_bit_for_bit_on_k_quants() {
        let Some(avx2) = Avx2::detect() else {
            eprintln!("SKIPPED: this CPU has no AVX2/FMA/F16C");
            return;
        };
        for ((format, _), accumulation) in FORMATS.into_iter().flat_map(|f| {
            [
                Accumulation::Lanes,
                Accumulation::Rows,
                Accumulation::RowsBatched,
                Accumulation::Tiled,
            ]
            .map(|a| (f, a))
        }) {
            for blocks in [1, 3, 19] {
                for rows in 1..=6 {
                    let columns = blocks * SUPER_BLOCK;
                    let row_bytes = blocks * format.block_bytes();
                    let seed = (blocks * 10 + rows) as u64;
                    let bytes = random_blocks(format, rows * blocks, seed, &EXTREME_SCALES);
                    let a = activations(columns, seed, rows % 3);
                    let mut portable = vec![0.0; rows];
                    let mut simd = vec![0.0; rows];
                    dot_rows(format, accumulation, &bytes, row_bytes, &a, &mut portable);
                    avx2.dot_rows_super(format, accumulation, &bytes, row_bytes, &a, &mut simd);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&portable),
                        bits(&simd),
                        "{format:?} {accumulation:?} {blocks} blocks x {rows} rows: {portable:?} vs {simd:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn token_groups_give_each_product_the_bits_of_one_token_alone() {
        let Some(avx2) = Avx2::detect() else {
            eprintln!("SKIPPED: this CPU has no AVX2/FMA/F16C");
            return;
        };
        for ((format, _), accumulation) in FORMATS.into_iter().flat_map(|f| {
            [
                Accumulation::Lanes,
                Accumulation::Rows,
                Accumulation::RowsBatched,
                Accumulation::Tiled,
            ]
            .map(|a| (f, a))
        }) {
            let (blocks, rows) = (3, 3);
            let columns = blocks * SUPER_BLOCK;
            let row_bytes = blocks * format.block_bytes();
            let bytes = random_blocks(format, rows * blocks, 5, &EXTREME_SCALES);
            // 9 tokens: two groups of four and one alone.
            let tokens: Vec<Vec<SuperBlock>> = (0..9)
                .map(|t| activations(columns, 40 + t, t as usize % 4))
                .collect();
            let batch: Vec<SuperBlock> = tokens.iter().flatten().cloned().collect();
            let mut grouped = vec![0.0; rows * tokens.len()];
            let mut out = Products {
                values: &mut grouped,
                stride: rows,
            };
            avx2.dot_tile_super(format, accumulation, &bytes, row_bytes, &batch, &mut out);
            for (t, token) in tokens.iter().enumerate() {
                let mut alone = vec![0.0; rows];
                dot_rows(format, accumulation, &bytes, row_bytes, token, &mut alone);
                let got: Vec<u32> = (0..rows).map(|r| grouped[t * rows + r].to_bits()).collect();
                let want: Vec<u32> = alone.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "{format:?} {accumulation:?} token {t}");
            }
        }
    }
}
