//! The k-quant weight formats (256 weights per super-block, in sub-blocks with their own
//! scales), as ggml lays them out, and the portable dot product of one row of super-blocks
//! with a row of Q8_K activations ([`SuperBlock`]):
//!
//! | format | bytes | layout | weight `e` |
//! |---|---|---|---|
//! | Q4_K | 144 | `d`, `dmin`, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles | `d * sc[e / 32] * q - dmin * m[e / 32]`, `q` in 0..16 |
//! | Q5_K | 176 | as Q4_K, with 32 bytes of fifth bits before the nibbles | as Q4_K, `q` in 0..32 |
//! | Q6_K | 210 | 128 bytes of low nibbles, 64 bytes of high bit pairs, 16 signed scales, `d` | `d * sc[e / 16] * (q - 32)`, `q` in 0..64 |
//!
//! (`d` and `dmin` are little-endian f16.) In Q4_K and Q5_K, each 64 weights share 32 bytes
//! of nibbles: weight `64j + k` in the low half of byte `32j + k`, weight `64j + 32 + k` in
//! its high half; bit `e / 32` of fifth-bit byte `e % 32` is weight `e`'s fifth bit. In Q6_K,
//! each 128 weights share 64 nibble bytes and 32 high-bit bytes: weight `128n + 32m + l`
//! takes the low (m = 0, 1) or high (m = 2, 3) nibble of byte `64n + 32(m % 2) + l` and bits
//! `2m, 2m + 1` of byte `32n + l`.
//!
//! As in [`super::blocks`], the dot product reproduces ggml's AVX2 kernels
//! (`ggml_vec_dot_q4_K_q8_K` and its Q5_K and Q6_K siblings) operation for operation: the
//! scaled integer products go to eight i32 lanes (lane `l` holds the weights with
//! `e % 32 / 4 == l`), which are exact; per super-block each f32 lane accumulates
//! `d_w * d_a * lane` with a fused multiply-add; the lanes are summed as `hsum_float_8`. The
//! `dmin` terms are summed apart: in four lanes (two sub-blocks each) for Q4_K, in one scalar
//! for Q5_K, as ggml does. Q6_K's offset of 32 is taken off lane by lane after the unsigned
//! products, lane `l` that of weights `32l..32l + 32`, as ggml does. For Q4_K matrices whose rows come in eights, llama.cpp on AVX2 runs
//! its repacked kernel instead, with one f32 sum per row ([`Accumulation::Rows`]); so does
//! [`dot_row`] when asked.

use super::activation_k::{SUM_GROUP, SUPER_BLOCK, SuperBlock};
use super::blocks::sum_lanes;
use super::f16_at;
use super::format::{Accumulation, Products};

/// Sub-blocks of 32 weights per super-block (Q4_K and Q5_K scale each one).
const SUB_BLOCKS: usize = SUPER_BLOCK / 32;

/// A k-quant format (256-weight super-blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SuperBlockFormat {
    Q4K,
    Q5K,
    Q6K,
}

impl SuperBlockFormat {
    /// Bytes per super-block of [`SUPER_BLOCK`] weights.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }
}

/// One super-block unpacked: `weight[e] = d * scales[e / 16] * values[e] - dmin * mins[e / 32]`.
pub(crate) struct Unpacked {
    pub values: [i8; SUPER_BLOCK],
    /// The scale of each 16 weights (Q4_K and Q5_K repeat their 32-weight scales).
    pub scales: [i32; SUPER_BLOCK / SUM_GROUP],
    /// The offset of each 32 weights (zero for Q6_K).
    pub mins: [i32; SUB_BLOCKS],
    pub d: f32,
    pub dmin: f32,
}

/// The 6-bit scales and mins of Q4_K and Q5_K, packed in 12 bytes (ggml's
/// `get_scale_min_k4`): sub-blocks 0..4 in the low six bits of bytes 0..4 (scales) and 4..8
/// (mins); sub-blocks 4..8 in the nibbles of bytes 8..12 with their top two bits in the spare
/// bits of bytes 0..8.
pub(crate) fn scales_and_mins(packed: &[u8]) -> ([u8; SUB_BLOCKS], [u8; SUB_BLOCKS]) {
    let mut scales = [0u8; SUB_BLOCKS];
    let mut mins = [0u8; SUB_BLOCKS];
    for j in 0..SUB_BLOCKS {
        (scales[j], mins[j]) = if j < 4 {
            (packed[j] & 63, packed[j + 4] & 63)
        } else {
            (
                (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4),
                (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
            )
        };
    }
    (scales, mins)
}

/// Unpacks one super-block (`block.len() == format.block_bytes()`).
pub(crate) fn unpack(format: SuperBlockFormat, block: &[u8]) -> Unpacked {
    let mut out = Unpacked {
        values: [0; SUPER_BLOCK],
        scales: [0; SUPER_BLOCK / SUM_GROUP],
        mins: [0; SUB_BLOCKS],
        d: 0.0,
        dmin: 0.0,
    };
    match format {
        SuperBlockFormat::Q4K | SuperBlockFormat::Q5K => {
            out.d = f16_at(block, 0);
            out.dmin = f16_at(block, 2);
            let (scales, mins) = scales_and_mins(&block[4..16]);
            let (high_bits, nibbles) = match format {
                SuperBlockFormat::Q5K => (Some(&block[16..48]), &block[48..176]),
                _ => (None, &block[16..144]),
            };
            for (e, value) in out.values.iter_mut().enumerate() {
                let (j, half, k) = (e / 64, e / 32 % 2, e % 32);
                let nibble = (nibbles[32 * j + k] >> (4 * half)) & 0x0F;
                let fifth = high_bits.map_or(0, |bits| ((bits[k] >> (e / 32)) & 1) << 4);
                *value = (nibble | fifth) as i8;
            }
            for (g, scale) in out.scales.iter_mut().enumerate() {
                *scale = i32::from(scales[g / 2]);
            }
            for (min, &m) in out.mins.iter_mut().zip(&mins) {
                *min = i32::from(m);
            }
        }
        SuperBlockFormat::Q6K => {
            let (low, high) = (&block[0..128], &block[128..192]);
            for (e, value) in out.values.iter_mut().enumerate() {
                let (n, m, l) = (e / 128, e / 32 % 4, e % 32);
                let nibble = (low[64 * n + 32 * (m % 2) + l] >> (4 * (m / 2))) & 0x0F;
                let pair = (high[32 * n + l] >> (2 * m)) & 3;
                *value = (nibble | (pair << 4)) as i8 - 32;
            }
            for (scale, &byte) in out.scales.iter_mut().zip(&block[192..208]) {
                *scale = i32::from(byte as i8);
            }
            out.d = f16_at(block, 208);
        }
    }
    out
}

/// The sum of the activations of sub-block `k` (32 values), from ggml's 16-value sums.
pub(crate) fn sub_block_sum(a: &SuperBlock, k: usize) -> i32 {
    i32::from(a.sums[2 * k]) + i32::from(a.sums[2 * k + 1])
}

/// The dot product of one row of super-blocks with the quantized activations, in the same
/// operations as the AVX2 kernel (see the module docs).
pub(crate) fn dot_row(
    format: SuperBlockFormat,
    accumulation: Accumulation,
    row: &[u8],
    activations: &[SuperBlock],
) -> f32 {
    match accumulation {
        Accumulation::Rows => return dot_row_interleaved(format, row, activations, false),
        // Only Q4_K matrices are repacked (`Accumulation::for_matrix`); the AVX2 kernels of
        // the other k-quants step per super-block in either repacked order, and so does this.
        Accumulation::RowsBatched => {
            let by_64 = format == SuperBlockFormat::Q4K;
            return dot_row_interleaved(format, row, activations, by_64);
        }
        Accumulation::Tiled => return dot_row_tiled(format, row, activations),
        Accumulation::Lanes => {}
    }
    let mut lanes = [0.0f32; 8];
    let mut min_lanes = [0.0f32; 4];
    let mut min_sum = 0.0f32;
    for (block, a) in row.chunks_exact(format.block_bytes()).zip(activations) {
        let w = unpack(format, block);
        let mut sums = [0i32; 8];
        // Q6_K's weights are offset by 32: ggml multiplies the unsigned values and takes the
        // offset off afterwards, lane `l` the offset of weights `32l..32l + 32` (their two
        // activation sums times their scales). The lanes' integers, and so their roundings,
        // depend on that split.
        let unsigned = if format == SuperBlockFormat::Q6K {
            32
        } else {
            0
        };
        for (e, (&q, &y)) in w.values.iter().zip(&a.qs).enumerate() {
            sums[e % 32 / 4] += w.scales[e / SUM_GROUP] * (i32::from(q) + unsigned) * i32::from(y);
        }
        if format == SuperBlockFormat::Q6K {
            for (l, sum) in sums.iter_mut().enumerate() {
                let offset = i32::from(a.sums[2 * l]) * w.scales[2 * l]
                    + i32::from(a.sums[2 * l + 1]) * w.scales[2 * l + 1];
                *sum -= offset << 5;
            }
        }
        let d = a.d * w.d;
        for (acc, sum) in lanes.iter_mut().zip(sums) {
            *acc = d.mul_add(sum as f32, *acc);
        }
        let dmin = -a.d * w.dmin;
        let offset = |k: usize| w.mins[k] * sub_block_sum(a, k);
        match format {
            SuperBlockFormat::Q4K => {
                for (m, acc) in min_lanes.iter_mut().enumerate() {
                    *acc = dmin.mul_add((offset(2 * m) + offset(2 * m + 1)) as f32, *acc);
                }
            }
            SuperBlockFormat::Q5K => {
                // One integer (exact in any order), then one fused step, as ggml's
                // `summs += dmin * sum` compiles.
                let total: i32 = (0..SUB_BLOCKS).map(offset).sum();
                min_sum = dmin.mul_add(total as f32, min_sum);
            }
            SuperBlockFormat::Q6K => {}
        }
    }
    match format {
        SuperBlockFormat::Q4K => {
            let offsets = (min_lanes[0] + min_lanes[2]) + (min_lanes[1] + min_lanes[3]);
            sum_lanes(lanes) + offsets
        }
        SuperBlockFormat::Q5K => sum_lanes(lanes) + min_sum,
        SuperBlockFormat::Q6K => sum_lanes(lanes),
    }
}

/// [`dot_row`] in the order of ggml's repacked kernels: per super-block (its GEMV,
/// `ggml_gemv_q4_K_8x8_q8_K`) or per 64 weights (its GEMM for groups of four tokens,
/// `ggml_gemm_q4_K_8x8_q8_K`: `by_64`), the integer sum times `d_w * d_a` and the offsets'
/// integer sum times `dmin_w * d_a`, each into its own f32 sum (fused); the offsets subtracted
/// at the end.
fn dot_row_interleaved(
    format: SuperBlockFormat,
    row: &[u8],
    activations: &[SuperBlock],
    by_64: bool,
) -> f32 {
    let (mut total, mut offsets) = (0.0f32, 0.0f32);
    let parts = if by_64 { SUPER_BLOCK / 64 } else { 1 };
    let width = SUPER_BLOCK / parts;
    for (block, a) in row.chunks_exact(format.block_bytes()).zip(activations) {
        let w = unpack(format, block);
        for part in 0..parts {
            let elements = part * width..(part + 1) * width;
            let sum: i32 = elements
                .clone()
                .map(|e| w.scales[e / SUM_GROUP] * i32::from(w.values[e]) * i32::from(a.qs[e]))
                .sum();
            let offset: i32 = (elements.start / 32..elements.end / 32)
                .map(|k| w.mins[k] * sub_block_sum(a, k))
                .sum();
            total = (sum as f32).mul_add(w.d * a.d, total);
            offsets = (offset as f32).mul_add(w.dmin * a.d, offsets);
        }
    }
    total - offsets
}

/// [`dot_row`] in the order of llama.cpp's tiled k-quant matmul ([`Accumulation::Tiled`]).
fn dot_row_tiled(format: SuperBlockFormat, row: &[u8], activations: &[SuperBlock]) -> f32 {
    let mut total = 0.0f32;
    for (block, a) in row.chunks_exact(format.block_bytes()).zip(activations) {
        let w = unpack(format, block);
        let sum: i32 = (0..SUPER_BLOCK)
            .map(|e| w.scales[e / SUM_GROUP] * i32::from(w.values[e]) * i32::from(a.qs[e]))
            .sum();
        let offset: i32 = match format {
            SuperBlockFormat::Q6K => 0,
            _ => (0..SUB_BLOCKS)
                .map(|k| w.mins[k] * sub_block_sum(a, k))
                .sum(),
        };
        total = tiled_step(total, sum, w.d, offset, w.dmin, a.d);
    }
    total
}

/// One super-block of [`Accumulation::Tiled`]: `total + (d_w·sum − dmin_w·offset)·d_a`, the
/// subtraction and the addition fused. (With no offset, the fused subtraction adds an exact
/// zero.)
#[inline(always)]
pub(crate) fn tiled_step(
    total: f32,
    sum: i32,
    d_w: f32,
    offset: i32,
    dmin_w: f32,
    d_a: f32,
) -> f32 {
    let block = (-dmin_w).mul_add(offset as f32, d_w * sum as f32);
    block.mul_add(d_a, total)
}

/// [`dot_row`] of every whole row of `row_bytes` bytes in `rows` with every token of
/// `activations` (the tokens one after another, `row_bytes / block_bytes` blocks each).
pub(crate) fn dot_tile(
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
    for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
        for (t, token) in activations.chunks_exact(blocks).enumerate() {
            out.set(r, t, dot_row(format, accumulation, row, token));
        }
    }
}

/// [`dot_tile`] with one token: one result per row.
#[cfg(test)]
pub(crate) fn dot_rows(
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
    dot_tile(format, accumulation, rows, row_bytes, activations, out);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use half::f16;

    pub(crate) const FORMATS: [(SuperBlockFormat, GgmlDType); 3] = [
        (SuperBlockFormat::Q4K, GgmlDType::Q4K),
        (SuperBlockFormat::Q5K, GgmlDType::Q5K),
        (SuperBlockFormat::Q6K, GgmlDType::Q6K),
    ];

    /// Random super-blocks: every byte random except the f16 scales, which cycle through
    /// `scales` (finite values, extremes included, so that no NaN can appear).
    pub(crate) fn random_blocks(
        format: SuperBlockFormat,
        count: usize,
        seed: u64,
        scales: &[f32],
    ) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u32
        };
        let mut out = Vec::with_capacity(count * format.block_bytes());
        for b in 0..count {
            let mut block: Vec<u8> = (0..format.block_bytes()).map(|_| next() as u8).collect();
            let scale = |i: usize| f16::from_f32(scales[(b * 2 + i) % scales.len()]);
            let offsets: &[usize] = match format {
                SuperBlockFormat::Q6K => &[208],
                _ => &[0, 2],
            };
            for (i, &at) in offsets.iter().enumerate() {
                block[at..at + 2].copy_from_slice(&scale(i).to_bits().to_le_bytes());
            }
            out.extend(block);
        }
        out
    }

    #[test]
    fn unpacked_blocks_dequantize_like_candle() {
        for (format, dtype) in FORMATS {
            let weights: Vec<f32> = (0..512)
                .map(|i| ((i * 37) % 101) as f32 * 0.02 - 1.1 + if i % 61 == 0 { 3.0 } else { 0.0 })
                .collect();
            let tensor = Tensor::from_vec(weights, (2, 256), &Device::Cpu).expect("tensor");
            let candle = QTensor::quantize(&tensor, dtype).expect("quantize");
            let raw = candle.data().expect("raw bytes");
            let dequantized: Vec<f32> = candle
                .dequantize(&Device::Cpu)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .expect("dequantize");
            for (b, block) in raw.chunks_exact(format.block_bytes()).enumerate() {
                let w = unpack(format, block);
                for e in 0..SUPER_BLOCK {
                    let scale = w.d * w.scales[e / SUM_GROUP] as f32;
                    let value = scale * f32::from(w.values[e]) - w.dmin * w.mins[e / 32] as f32;
                    let expected = dequantized[b * SUPER_BLOCK + e];
                    assert!(
                        (value - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                        "{format:?} block {b} [{e}]: {value} vs {expected}"
                    );
                }
            }
        }
    }

    /// Scales for [`random_blocks`]: ordinary ones and f16's extremes (zero, the smallest
    /// subnormal, the smallest normal, the largest finite, negative ones).
    pub(crate) const EXTREME_SCALES: [f32; 9] = [
        0.013, 1.0, 0.0, 5.96e-8, 6.104e-5, 65504.0, -65504.0, -0.25, 2.0e-3,
    ];

    /// Values in [-1, 1) with a larger one now and then, so that activation blocks have
    /// different scales; a whole 256 of zeros at `zero_block`.
    pub(crate) fn activations(columns: usize, seed: u64, zero_block: usize) -> Vec<SuperBlock> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let x: Vec<f32> = (0..columns)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                match i {
                    _ if i / SUPER_BLOCK == zero_block => 0.0,
                    _ if i % 97 == 0 => unit * 300.0,
                    _ => unit,
                }
            })
            .collect();
        let mut out = Vec::new();
        crate::model::kernels::activation_k::quantize_row(&x, &mut out);
        out
    }

    #[test]
    fn dot_products_match_an_f64_reference() {
        for (format, _) in FORMATS {
            for blocks in [1, 2, 19] {
                let columns = blocks * SUPER_BLOCK;
                let row_bytes = blocks * format.block_bytes();
                let rows = 5;
                let bytes = random_blocks(format, rows * blocks, 7, &[0.011, -0.003, 0.5]);
                let a = activations(columns, blocks as u64, 1);
                let mut lanes = vec![0.0; rows];
                let mut by_rows = vec![0.0; rows];
                dot_rows(
                    format,
                    Accumulation::Lanes,
                    &bytes,
                    row_bytes,
                    &a,
                    &mut lanes,
                );
                dot_rows(
                    format,
                    Accumulation::Rows,
                    &bytes,
                    row_bytes,
                    &a,
                    &mut by_rows,
                );
                let mut batched = vec![0.0; rows];
                dot_rows(
                    format,
                    Accumulation::RowsBatched,
                    &bytes,
                    row_bytes,
                    &a,
                    &mut batched,
                );
                let results = lanes
                    .iter()
                    .enumerate()
                    .chain(by_rows.iter().enumerate())
                    .chain(batched.iter().enumerate());
                for (r, got) in results {
                    let row = &bytes[r * row_bytes..(r + 1) * row_bytes];
                    let (mut exact, mut magnitude) = (0.0f64, 0.0f64);
                    for (block, a) in row.chunks_exact(format.block_bytes()).zip(&a) {
                        let w = unpack(format, block);
                        for e in 0..SUPER_BLOCK {
                            let y = f64::from(a.d) * f64::from(a.qs[e]);
                            let scaled = f64::from(w.d)
                                * f64::from(w.scales[e / SUM_GROUP])
                                * f64::from(w.values[e])
                                * y;
                            let offset = f64::from(w.dmin) * f64::from(w.mins[e / 32]) * y;
                            exact += scaled - offset;
                            magnitude += scaled.abs() + offset.abs();
                        }
                    }
                    let tolerance = magnitude * 1e-5 + 1e-9;
                    assert!(
                        (f64::from(*got) - exact).abs() <= tolerance,
                        "{format:?} {blocks} blocks row {r}: {got} vs {exact} (±{tolerance})"
                    );
                }
            }
        }
    }

    #[test]
    fn packed_scales_and_mins_unpack_to_six_bits() {
        // Scales 0..8 and mins 63..55, packed as ggml's quantizer packs them.
        let scales: Vec<u8> = (0..8).collect();
        let mins: Vec<u8> = (55..63).rev().collect();
        let mut packed = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                packed[j] = scales[j];
                packed[j + 4] = mins[j];
            } else {
                packed[j + 4] = (scales[j] & 0x0F) | ((mins[j] & 0x0F) << 4);
                packed[j - 4] |= (scales[j] >> 4) << 6;
                packed[j] |= (mins[j] >> 4) << 6;
            }
        }
        let (got_scales, got_mins) = scales_and_mins(&packed);
        assert_eq!(got_scales.to_vec(), scales);
        assert_eq!(got_mins.to_vec(), mins);
    }
}
