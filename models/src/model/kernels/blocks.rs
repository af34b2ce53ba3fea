//! The weight block formats the kernels read, as ggml lays them out (32 weights per block,
//! little-endian f16 scales), and the portable dot product of one row of blocks with a row of
//! [`ActivationBlock`]s:
//!
//! | format | bytes | layout | weight |
//! |---|---|---|---|
//! | Q4_0 | 18 | `d`, 16 bytes of nibbles | `d * (q - 8)`, `q` in 0..16 |
//! | Q4_1 | 20 | `d`, `m`, 16 bytes of nibbles | `d * q + m`, `q` in 0..16 |
//! | Q5_0 | 22 | `d`, 4 bytes of high bits, 16 bytes of nibbles | `d * (q - 16)`, `q` in 0..32 |
//! | Q5_1 | 24 | `d`, `m`, 4 bytes of high bits, 16 bytes of nibbles | `d * q + m`, `q` in 0..32 |
//! | Q8_0 | 34 | `d`, 32 signed bytes | `d * q` |
//!
//! In the 4- and 5-bit formats, nibble byte `j` holds weight `j` in its low half and weight `j + 16` in its high half; bit
//! `j` of the high bits is the fifth bit of weight `j`.
//!
//! The dot product reproduces ggml's AVX2 kernels operation for operation, not just their
//! formula: the integer sums of four consecutive products go to eight f32 lanes, each lane
//! accumulates `d_w * d_a * sum` with a fused multiply-add block after block, the lanes are
//! added pairwise in the order of ggml's `hsum_float_8`, and the `m * s` terms of Q4_1/Q5_1
//! are summed apart (fused as well, as C compilers contract `summs += m * s`). The result is
//! therefore bit-identical to the AVX2 code in `avx2.rs` and, as far as the float operations
//! go, to llama.cpp's.
//!
//! For Q4_0 matrices whose rows come in eights, llama.cpp on AVX2 runs its repacked kernel
//! instead, which adds each block's whole integer sum times `d_w * d_a` to one f32 sum per row
//! ([`Accumulation::Rows`]); [`dot_row`] does that too when asked.

use super::activation::{ActivationBlock, BLOCK};
use super::f16_at;
use super::format::{Accumulation, Products};

/// A format of 32-weight blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockFormat {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
}

impl BlockFormat {
    /// Bytes per block of [`BLOCK`] weights.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
        }
    }

    /// Whether weights carry an offset `m` (and the dot product an `m * s` term).
    pub(crate) const fn has_min(self) -> bool {
        matches!(self, Self::Q4_1 | Self::Q5_1)
    }
}

/// One block of weights unpacked: `weight[i] = d * values[i] + m`.
pub(crate) struct Unpacked {
    pub values: [i8; BLOCK],
    pub d: f32,
    pub m: f32,
}

fn high_bits_at(block: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        block[offset],
        block[offset + 1],
        block[offset + 2],
        block[offset + 3],
    ])
}

/// Unpacks one block (`block.len() == format.block_bytes()`).
pub(crate) fn unpack(format: BlockFormat, block: &[u8]) -> Unpacked {
    let d = f16_at(block, 0);
    let mut values = [0i8; BLOCK];
    let (nibbles_at, high_bits, offset, m) = match format {
        BlockFormat::Q4_0 => (2, 0, -8, 0.0),
        BlockFormat::Q4_1 => (4, 0, 0, f16_at(block, 2)),
        BlockFormat::Q5_0 => (6, high_bits_at(block, 2), -16, 0.0),
        BlockFormat::Q5_1 => (8, high_bits_at(block, 4), 0, f16_at(block, 2)),
        BlockFormat::Q8_0 => {
            for (value, &byte) in values.iter_mut().zip(&block[2..2 + BLOCK]) {
                *value = byte as i8;
            }
            return Unpacked { values, d, m: 0.0 };
        }
    };
    for (j, &byte) in block[nibbles_at..nibbles_at + BLOCK / 2].iter().enumerate() {
        let fifth = |i: usize| (((high_bits >> i) & 1) << 4) as i8;
        values[j] = (byte & 0x0F) as i8 + fifth(j) + offset;
        values[j + BLOCK / 2] = (byte >> 4) as i8 + fifth(j + BLOCK / 2) + offset;
    }
    Unpacked { values, d, m }
}

/// ggml's `hsum_float_8`: upper half plus lower half, then the two pairs, then the last pair.
pub(crate) fn sum_lanes(lanes: [f32; 8]) -> f32 {
    let quad = [
        lanes[4] + lanes[0],
        lanes[5] + lanes[1],
        lanes[6] + lanes[2],
        lanes[7] + lanes[3],
    ];
    (quad[0] + quad[2]) + (quad[1] + quad[3])
}

/// The dot product of one row of weight blocks with the quantized activations, in the same
/// operations as the AVX2 kernel (see the module docs) in the given order.
pub(crate) fn dot_row(
    format: BlockFormat,
    accumulation: Accumulation,
    row: &[u8],
    activations: &[ActivationBlock],
) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut total = 0.0f32;
    let mut offsets = 0.0f32;
    for (block, a) in row.chunks_exact(format.block_bytes()).zip(activations) {
        let weights = unpack(format, block);
        let scale = weights.d * a.d;
        let lane_sum = |lane: usize| -> i32 {
            (lane * 4..lane * 4 + 4)
                .map(|i| i32::from(weights.values[i]) * i32::from(a.qs[i]))
                .sum()
        };
        match accumulation {
            // The tiled order is the k-quants' only.
            Accumulation::Lanes | Accumulation::Tiled => {
                for (lane, acc) in lanes.iter_mut().enumerate() {
                    *acc = scale.mul_add(lane_sum(lane) as f32, *acc);
                }
            }
            Accumulation::Rows | Accumulation::RowsBatched => {
                let sum: i32 = (0..8).map(lane_sum).sum();
                total = (sum as f32).mul_add(scale, total);
            }
        }
        if format.has_min() {
            offsets = weights.m.mul_add(a.s, offsets);
        }
    }
    let products = match accumulation {
        Accumulation::Lanes | Accumulation::Tiled => sum_lanes(lanes),
        Accumulation::Rows | Accumulation::RowsBatched => total,
    };
    if format.has_min() {
        products + offsets
    } else {
        products
    }
}

/// [`dot_row`] of every whole row of `row_bytes` bytes in `rows` with every token of
/// `activations` (the tokens one after another, `row_bytes / block_bytes` blocks each).
pub(crate) fn dot_tile(
    format: BlockFormat,
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    activations: &[ActivationBlock],
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
    format: BlockFormat,
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    activations: &[ActivationBlock],
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
    use half::f16;

    /// Quantizes `weights` (a multiple of 32 long) into `format`'s blocks the way ggml's
    /// reference quantizers do (min/max for Q4_1 and Q5_1, signed max for Q5_0); the tests
    /// only need valid blocks, not the best ones.
    pub(crate) fn quantize_weights(format: BlockFormat, weights: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for values in weights.chunks_exact(BLOCK) {
            let min = values.iter().copied().fold(f32::INFINITY, f32::min);
            let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if format == BlockFormat::Q8_0 {
                let amax = values.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
                out.extend(values.iter().map(|v| (v * id).round() as i8 as u8));
                continue;
            }
            let (d, m, q): (f32, f32, Vec<u8>) = match format {
                BlockFormat::Q4_1 | BlockFormat::Q5_1 => {
                    let levels = if format == BlockFormat::Q4_1 { 15 } else { 31 };
                    let d = (max - min) / levels as f32;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    let q = values
                        .iter()
                        .map(|v| (((v - min) * id).round() as u8).min(levels))
                        .collect();
                    (d, min, q)
                }
                BlockFormat::Q4_0 | BlockFormat::Q5_0 | BlockFormat::Q8_0 => {
                    // (Q8_0 was handled above.)
                    let half = if format == BlockFormat::Q4_0 { 8 } else { 16 };
                    let signed_max = values
                        .iter()
                        .copied()
                        .fold(0.0f32, |a, v| if v.abs() > a.abs() { v } else { a });
                    let d = signed_max / -(half as f32);
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    let q = values
                        .iter()
                        .map(|v| ((v * id + half as f32 + 0.5) as i32).clamp(0, 2 * half - 1) as u8)
                        .collect();
                    (d, 0.0, q)
                }
            };
            out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
            if format.has_min() {
                out.extend_from_slice(&f16::from_f32(m).to_bits().to_le_bytes());
            }
            if !matches!(format, BlockFormat::Q4_0 | BlockFormat::Q4_1) {
                let high = q
                    .iter()
                    .enumerate()
                    .fold(0u32, |h, (i, q)| h | (u32::from(q >> 4 & 1) << i));
                out.extend_from_slice(&high.to_le_bytes());
            }
            out.extend((0..BLOCK / 2).map(|j| (q[j] & 0x0F) | ((q[j + BLOCK / 2] & 0x0F) << 4)));
        }
        out
    }

    #[test]
    fn unpacking_inverts_quantizing() {
        for format in [
            BlockFormat::Q4_0,
            BlockFormat::Q4_1,
            BlockFormat::Q5_0,
            BlockFormat::Q5_1,
            BlockFormat::Q8_0,
        ] {
            let weights: Vec<f32> = (0..32).map(|i| ((i * 7) % 32) as f32 - 9.0).collect();
            let bytes = quantize_weights(format, &weights);
            assert_eq!(bytes.len(), format.block_bytes());
            let block = unpack(format, &bytes);
            for (i, w) in weights.iter().enumerate() {
                let back = block.d * f32::from(block.values[i]) + block.m;
                let step = if matches!(format, BlockFormat::Q4_0 | BlockFormat::Q4_1) {
                    3.0
                } else {
                    1.5
                };
                assert!(
                    (back - w).abs() <= step,
                    "{format:?} weight {i}: {back} vs {w}"
                );
            }
        }
    }

    #[test]
    fn candle_dequantizes_our_test_blocks_the_same() {
        use candle_core::quantized::{GgmlDType, QTensor};
        use candle_core::{Device, Tensor};
        for (format, dtype) in [
            (BlockFormat::Q4_0, GgmlDType::Q4_0),
            (BlockFormat::Q4_1, GgmlDType::Q4_1),
            (BlockFormat::Q5_0, GgmlDType::Q5_0),
            (BlockFormat::Q5_1, GgmlDType::Q5_1),
            (BlockFormat::Q8_0, GgmlDType::Q8_0),
        ] {
            let weights: Vec<f32> = (0..64)
                .map(|i| ((i * 13) % 29) as f32 * 0.1 - 1.0)
                .collect();
            let tensor = Tensor::from_vec(weights, (2, 32), &Device::Cpu).expect("tensor");
            let candle = QTensor::quantize(&tensor, dtype).expect("quantize");
            let raw = candle.data().expect("raw bytes");
            let dequantized: Vec<f32> = candle
                .dequantize(&Device::Cpu)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .expect("dequantize");
            for (b, block) in raw.chunks_exact(format.block_bytes()).enumerate() {
                let ours = unpack(format, block);
                for i in 0..BLOCK {
                    let value = ours.d * f32::from(ours.values[i]) + ours.m;
                    assert_eq!(
                        value,
                        dequantized[b * BLOCK + i],
                        "{format:?} block {b} [{i}]"
                    );
                }
            }
        }
    }
}
