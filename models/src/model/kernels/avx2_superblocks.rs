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
    __m128i, __m256i, _mm_add_epi32, _mm_add_ps, _mm_add_ss, _mm_cvtepi32_ps, _mm_cvtepu8_epi16,
    _mm_cvtsi64_si128, _mm_cvtsi128_si32, _mm_cvtss_f32, _mm_fmadd_ps, _mm_hadd_epi16,
    _mm_hadd_epi32, _mm_madd_epi16, _mm_movehdup_ps, _mm_movehl_ps, _mm_set1_epi16, _mm_set1_ps,
    _mm_setzero_ps, _mm256_add_epi32, _mm256_and_si256, _mm256_castsi256_si128, _mm256_cmpeq_epi8,
    _mm256_cvtepi32_ps, _mm256_extracti128_si256, _mm256_fmadd_ps, _mm256_loadu_si256,
    _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_or_si256, _mm256_set_m128i, _mm256_set1_epi8,
    _mm256_set1_epi16, _mm256_set1_ps, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_slli_epi16,
    _mm256_srli_epi16, _mm256_sub_epi16,
};

use half::f16;

use super::activation_k::SuperBlock;
use super::avx2::{Avx2, sum_lanes};
use super::format::{Accumulation, Products};
use super::superblocks::{SuperBlockFormat, scales_and_mins, sub_block_sum};

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
        unsafe {
            match format {
                SuperBlockFormat::Q4K => tile_q4k(accumulation, rows, row_bytes, activations, out),
                SuperBlockFormat::Q5K => tile_q5k(accumulation, rows, row_bytes, activations, out),
                SuperBlockFormat::Q6K => tile_q6k(accumulation, rows, row_bytes, activations, out),
            }
        }
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

#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q4k(
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    activations: &[SuperBlock],
    out: &mut Products<'_>,
) {
    let blocks = row_bytes / SuperBlockFormat::Q4K.block_bytes();
    if blocks == 0 {
        return;
    }
    for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
        for (t, token) in activations.chunks_exact(blocks).enumerate() {
            out.set(r, t, dot_q4k(accumulation, row, token));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q5k(
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    activations: &[SuperBlock],
    out: &mut Products<'_>,
) {
    let blocks = row_bytes / SuperBlockFormat::Q5K.block_bytes();
    if blocks == 0 {
        return;
    }
    for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
        for (t, token) in activations.chunks_exact(blocks).enumerate() {
            out.set(r, t, dot_q5k(accumulation, row, token));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q6k(
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    activations: &[SuperBlock],
    out: &mut Products<'_>,
) {
    let blocks = row_bytes / SuperBlockFormat::Q6K.block_bytes();
    if blocks == 0 {
        return;
    }
    for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
        for (t, token) in activations.chunks_exact(blocks).enumerate() {
            out.set(r, t, dot_q6k(accumulation, row, token));
        }
    }
}

fn f16_at(block: &[u8], offset: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[offset], block[offset + 1]])).to_f32()
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

/// `scale * (x · y)` in eight i32 lanes of four products each: `x` unsigned (below 64), `y`
/// signed. No i16 pair sum saturates: 2 * 63 * 127 < 32,767.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scaled_products(x: __m256i, y: __m256i, scale: __m256i) -> __m256i {
    _mm256_madd_epi16(scale, _mm256_maddubs_epi16(x, y))
}

/// Q4_K (see [`super::superblocks`] for the layout).
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4k(accumulation: Accumulation, row: &[u8], activations: &[SuperBlock]) -> f32 {
    let low_nibble = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut acc_mins = _mm_setzero_ps();
    let mut rows = RowSums::default();
    for (block, a) in row
        .chunks_exact(SuperBlockFormat::Q4K.block_bytes())
        .zip(activations)
    {
        let d = a.d * f16_at(block, 0);
        let dmin = -a.d * f16_at(block, 2);
        let (scales, mins) = scales_and_mins(&block[4..16]);

        // The offsets: each lane two sub-blocks' min × activation sum, as ggml.
        let mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(mins)));
        // SAFETY: `sums` is 16 i16, 32 bytes.
        let sums = unsafe { _mm256_loadu_si256(a.sums.as_ptr().cast()) };
        let sub_block_sums = _mm_hadd_epi16(
            _mm256_castsi256_si128(sums),
            _mm256_extracti128_si256::<1>(sums),
        );
        let offsets = _mm_madd_epi16(mins, sub_block_sums);

        let nibbles = &block[16..144];
        let mut sum = _mm256_setzero_si256();
        for j in 0..4 {
            let bits = load(nibbles, 32 * j);
            let low = _mm256_and_si256(bits, low_nibble);
            let high = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low_nibble);
            let scale_low = _mm256_set1_epi16(i16::from(scales[2 * j]));
            let scale_high = _mm256_set1_epi16(i16::from(scales[2 * j + 1]));
            let p_low = scaled_products(low, load_activations(a, 64 * j), scale_low);
            let p_high = scaled_products(high, load_activations(a, 64 * j + 32), scale_high);
            sum = _mm256_add_epi32(sum, _mm256_add_epi32(p_low, p_high));
        }
        match accumulation {
            Accumulation::Lanes => {
                acc_mins = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(offsets), acc_mins);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum), acc);
            }
            Accumulation::Rows => rows.add(sum_i32(sum), d, sum_i32_4(offsets), dmin),
        }
    }
    match accumulation {
        Accumulation::Lanes => {
            let pair = _mm_add_ps(acc_mins, _mm_movehl_ps(acc_mins, acc_mins));
            let offsets = _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
            sum_lanes(acc) + offsets
        }
        Accumulation::Rows => rows.result(),
    }
}

/// Q5_K: Q4_K's nibbles plus a fifth bit per weight.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q5k(accumulation: Accumulation, row: &[u8], activations: &[SuperBlock]) -> f32 {
    let low_nibble = _mm256_set1_epi8(0x0F);
    let sixteen = _mm256_set1_epi8(16);
    let mut acc = _mm256_setzero_ps();
    let mut min_sum = 0.0f32;
    let mut rows = RowSums::default();
    for (block, a) in row
        .chunks_exact(SuperBlockFormat::Q5K.block_bytes())
        .zip(activations)
    {
        let d = a.d * f16_at(block, 0);
        let dmin = -a.d * f16_at(block, 2);
        let (scales, mins) = scales_and_mins(&block[4..16]);
        let total: i32 = (0..mins.len())
            .map(|k| i32::from(mins[k]) * sub_block_sum(a, k))
            .sum();

        let high_bits = load(block, 16);
        let nibbles = &block[48..176];
        // Bit `s` of every high-bit byte: sub-block `s`'s fifth bits.
        let mut mask = _mm256_set1_epi8(1);
        let mut fifth = || {
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(high_bits, mask), mask);
            mask = _mm256_slli_epi16::<1>(mask);
            _mm256_and_si256(set, sixteen)
        };
        let mut sum = _mm256_setzero_si256();
        for j in 0..4 {
            let bits = load(nibbles, 32 * j);
            let low = _mm256_or_si256(_mm256_and_si256(bits, low_nibble), fifth());
            let high = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low_nibble);
            let high = _mm256_or_si256(high, fifth());
            let scale_low = _mm256_set1_epi16(i16::from(scales[2 * j]));
            let scale_high = _mm256_set1_epi16(i16::from(scales[2 * j + 1]));
            let p_low = scaled_products(low, load_activations(a, 64 * j), scale_low);
            let p_high = scaled_products(high, load_activations(a, 64 * j + 32), scale_high);
            sum = _mm256_add_epi32(sum, _mm256_add_epi32(p_low, p_high));
        }
        match accumulation {
            Accumulation::Lanes => {
                min_sum = dmin.mul_add(total as f32, min_sum);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum), acc);
            }
            Accumulation::Rows => rows.add(sum_i32(sum), d, total, dmin),
        }
    }
    match accumulation {
        Accumulation::Lanes => sum_lanes(acc) + min_sum,
        Accumulation::Rows => rows.result(),
    }
}

/// Q6_K: six-bit weights offset by 32, a signed scale per 16.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q6k(accumulation: Accumulation, row: &[u8], activations: &[SuperBlock]) -> f32 {
    let low_nibble = _mm256_set1_epi8(0x0F);
    let two_bits = _mm256_set1_epi8(3);
    let thirty_two = _mm256_set1_epi8(32);
    let mut acc = _mm256_setzero_ps();
    let mut rows = RowSums::default();
    for (block, a) in row
        .chunks_exact(SuperBlockFormat::Q6K.block_bytes())
        .zip(activations)
    {
        let d = a.d * f16_at(block, 208);
        let scales = &block[192..208];
        let mut sum = _mm256_setzero_si256();
        for n in 0..2 {
            let low_1 = load(block, 64 * n);
            let low_2 = load(block, 64 * n + 32);
            let high = load(block, 128 + 32 * n);
            let pair =
                |shifted: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(shifted, two_bits));
            let weights = [
                _mm256_or_si256(_mm256_and_si256(low_1, low_nibble), pair(high)),
                _mm256_or_si256(
                    _mm256_and_si256(low_2, low_nibble),
                    pair(_mm256_srli_epi16::<2>(high)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(low_1), low_nibble),
                    pair(_mm256_srli_epi16::<4>(high)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(low_2), low_nibble),
                    pair(_mm256_srli_epi16::<6>(high)),
                ),
            ];
            for (m, &q) in weights.iter().enumerate() {
                let y = load_activations(a, 128 * n + 32 * m);
                // (q - 32) · y as q · y - 32 · y, both in maddubs' unsigned×signed form.
                let products = _mm256_sub_epi16(
                    _mm256_maddubs_epi16(q, y),
                    _mm256_maddubs_epi16(thirty_two, y),
                );
                // The first 16 weights (lanes 0..4) and the next 16 have their own scale.
                let group = 8 * n + 2 * m;
                let scale = _mm256_set_m128i(
                    _mm_set1_epi16(i16::from(scales[group + 1] as i8)),
                    _mm_set1_epi16(i16::from(scales[group] as i8)),
                );
                sum = _mm256_add_epi32(sum, _mm256_madd_epi16(scale, products));
            }
        }
        match accumulation {
            Accumulation::Lanes => {
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sum), acc);
            }
            Accumulation::Rows => rows.add(sum_i32(sum), d, 0, 0.0),
        }
    }
    match accumulation {
        Accumulation::Lanes => sum_lanes(acc),
        Accumulation::Rows => rows.result(),
    }
}

/// The two f32 sums of [`Accumulation::Rows`].
#[derive(Default)]
struct RowSums {
    total: f32,
    offsets: f32,
}

impl RowSums {
    /// One super-block: its integer sum with scale `d = d_w * d_a`, its offsets' integer sum
    /// with `dmin = -dmin_w * d_a` (as the lane kernels take it; negating is exact).
    fn add(&mut self, sum: i32, d: f32, offset: i32, dmin: f32) {
        self.total = (sum as f32).mul_add(d, self.total);
        self.offsets = (offset as f32).mul_add(-dmin, self.offsets);
    }

    fn result(&self) -> f32 {
        self.total - self.offsets
    }
}

/// The sum of eight i32 lanes (exact: a super-block's sum stays far below 2^31).
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
        for ((format, _), accumulation) in FORMATS
            .into_iter()
            .flat_map(|f| [(f, Accumulation::Lanes), (f, Accumulation::Rows)])
        {
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
}
