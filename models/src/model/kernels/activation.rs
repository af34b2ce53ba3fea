//! Activations quantized to 8 bits per block of 32 values, as ggml's `quantize_row_q8_1` does
//! in its AVX2 build (the build llama.cpp runs on x86-64-v3 CPUs and that produced our
//! reference vectors): per block `d = amax / 127`, `q = round_half_even(x * (127 / amax))`
//! and `s = d * sum(q)`, with `d` and `s` stored as f16. One block serves both of ggml's
//! activation formats: Q8_0 (Q5_0 weights) is Q8_1 without `s`, and its AVX2 code computes
//! `d` and `q` the same way.
//!
//! The AVX2 rounding (ties to even, scale `127 / amax` rather than `1 / d`) differs from
//! ggml's scalar reference (`roundf`, `1 / d`) on a few values per row; following the AVX2
//! code is what keeps the products equal to llama.cpp's.

use half::f16;

/// Blocks per task when a batch's activations are quantized on the pool
/// ([`super::quantize_blocks`]).
const PARALLEL_BLOCKS: usize = 256;

/// Values per block, for weights and activations alike.
pub(crate) const BLOCK: usize = 32;

/// One block of 32 quantized activations.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub(crate) struct ActivationBlock {
    /// The quantized values, `round(x / d)`.
    pub qs: [i8; BLOCK],
    /// The scale, already rounded through f16 as ggml stores it.
    pub d: f32,
    /// `d * sum(qs)` (with `d` before its f16 rounding), rounded through f16.
    pub s: f32,
}

impl ActivationBlock {
    const ZERO: Self = Self {
        qs: [0; BLOCK],
        d: 0.0,
        s: 0.0,
    };
}

/// Quantizes `x` (a multiple of [`BLOCK`] values long; a tail shorter than a block is
/// ignored, the caller checks widths) into `out`, replacing its contents.
pub(crate) fn quantize_row(x: &[f32], out: &mut Vec<ActivationBlock>) {
    out.clear();
    out.resize(x.len() / BLOCK, ActivationBlock::ZERO);
    super::quantize_blocks(x, out, (BLOCK, PARALLEL_BLOCKS), |values, block| {
        *block = quantize_block(values)
    });
}

fn quantize_block(values: &[f32]) -> ActivationBlock {
    // Eight running maxima, combined at the end: the same maximum as one running maximum
    // (max is exact and order-free), in a form the compiler vectorizes.
    let amax = largest_magnitude(values);
    let d = amax / 127.0;
    let scale = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; BLOCK];
    for (q, &v) in qs.iter_mut().zip(values) {
        // |v * scale| <= 127 up to rounding (v <= amax); the clamp is the saturation of
        // ggml's packs, and turns a NaN into 0.
        *q = (v * scale).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
    ActivationBlock {
        qs,
        d: f16::from_f32(d).to_f32(),
        s: f16::from_f32(d * sum as f32).to_f32(),
    }
}

/// The largest `|v|` of `values` (NaN ignored), in eight lanes: written as comparisons, which
/// compile to vector `max` instructions, where `f32::max` (NaN-aware) stays scalar. The
/// largest value is the same in any order.
pub(crate) fn largest_magnitude(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    for chunk in values.chunks_exact(lanes.len()) {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            let magnitude = v.abs();
            *lane = if magnitude > *lane { magnitude } else { *lane };
        }
    }
    for &v in values.chunks_exact(lanes.len()).remainder() {
        let magnitude = v.abs();
        lanes[0] = if magnitude > lanes[0] {
            magnitude
        } else {
            lanes[0]
        };
    }
    lanes.iter().fold(0.0f32, |m, &v| if v > m { v } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_follow_ggml_avx2_quantization() {
        let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
        // A value exactly halfway after scaling rounds to even: amax 127 makes the scale 1.
        x[32..64].fill(0.0);
        x[32] = 127.0;
        x[33] = 2.5;
        x[34] = -3.5;
        let mut blocks = Vec::new();
        quantize_row(&x, &mut blocks);
        assert_eq!(blocks.len(), 2);
        let first = &blocks[0];
        assert_eq!(first.qs[0], -127, "the largest magnitude maps to 127");
        let amax = 20.0 * 0.37f32;
        assert_eq!(first.d, f16::from_f32(amax / 127.0).to_f32());
        let second = &blocks[1];
        assert_eq!(&second.qs[..3], &[127, 2, -4]);
        assert_eq!(second.s, f16::from_f32(125.0).to_f32());
    }

    #[test]
    fn a_long_batch_quantized_on_a_pool_gives_each_block_alone() {
        let x: Vec<f32> = (0..BLOCK * (2 * PARALLEL_BLOCKS + 7))
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        let mut pooled = Vec::new();
        pool.install(|| quantize_row(&x, &mut pooled));
        let alone: Vec<ActivationBlock> = x.chunks_exact(BLOCK).map(quantize_block).collect();
        assert_eq!(pooled, alone);
    }

    #[test]
    fn the_largest_magnitude_ignores_nan_and_any_tail() {
        let values = [
            1.0,
            -7.5,
            f32::NAN,
            3.0,
            0.0,
            -0.0,
            7.25,
            2.0,
            -9.0,
            4.0,
            f32::NAN,
        ];
        for len in 0..=values.len() {
            let want = values[..len].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(largest_magnitude(&values[..len]), want, "{len} values");
        }
        assert_eq!(largest_magnitude(&[f32::NEG_INFINITY, 1.0]), f32::INFINITY);
    }

    #[test]
    fn an_all_zero_block_has_zero_scale() {
        let mut blocks = Vec::new();
        quantize_row(&[0.0; 32], &mut blocks);
        assert_eq!(blocks, vec![ActivationBlock::ZERO]);
    }

    /// The vectorizable form above against ggml's formula written plainly (one running
    /// maximum, the sum of the unclamped rounded values).
    #[test]
    fn quantizing_matches_the_plain_formula() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let x: Vec<f32> = (0..32 * 64)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                // Scales from tiny to large; a block of exact halves; a block of zeros.
                match i / 32 {
                    7 => (i % 32) as f32 - 15.5,
                    9 => 0.0,
                    b => unit * 10f32.powi(b % 9 - 4),
                }
            })
            .collect();
        let mut blocks = Vec::new();
        quantize_row(&x, &mut blocks);
        for (values, block) in x.chunks_exact(BLOCK).zip(&blocks) {
            let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let scale = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let rounded: Vec<i32> = values
                .iter()
                .map(|v| (v * scale).round_ties_even() as i32)
                .collect();
            let qs: Vec<i8> = rounded.iter().map(|&q| q as i8).collect();
            let sum: i32 = rounded.iter().sum();
            assert_eq!(block.qs.to_vec(), qs);
            assert_eq!(block.d, f16::from_f32(d).to_f32());
            assert_eq!(block.s, f16::from_f32(d * sum as f32).to_f32());
        }
    }
}
