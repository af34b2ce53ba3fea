//! Activations quantized for the k-quant kernels, as ggml's Q8_K: 256 values per block, an
//! f32 scale and the sums of each 16 quantized values. ggml's x86 build quantizes them with
//! its scalar reference (`quantize_row_q8_K_ref`, no SIMD variant), which this follows step
//! for step: the value of largest magnitude `max` (the first one, sign kept) sets
//! `iscale = -127 / max`, each value becomes `min(127, round_half_even(iscale * x))`, and the
//! stored scale is `1 / iscale` — not `max / -127`, which rounds differently.
//!
//! candle's own Q8_K quantizer (0.11) rounds half away from zero; following ggml's ties to even
//! is what keeps the products equal to llama.cpp's.

/// Super-blocks per task when a batch's activations are quantized on the pool
/// ([`super::quantize_blocks`]).
const PARALLEL_SUPER_BLOCKS: usize = 32;

/// Values per super-block, for k-quant weights and their activations alike.
pub(crate) const SUPER_BLOCK: usize = 256;

/// Values per partial sum in [`SuperBlock::sums`].
pub(crate) const SUM_GROUP: usize = 16;

/// One block of 256 quantized activations (ggml's `block_q8_K`).
#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub(crate) struct SuperBlock {
    /// The quantized values, `round(x / d)`, in -127..=127.
    pub qs: [i8; SUPER_BLOCK],
    /// The scale, f32 (unlike the 32-value blocks, ggml does not round it to f16).
    pub d: f32,
    /// The sum of each 16 consecutive `qs` (ggml's `bsums`), which the k-quants' offsets
    /// multiply.
    pub sums: [i16; SUPER_BLOCK / SUM_GROUP],
}

impl SuperBlock {
    const ZERO: Self = Self {
        qs: [0; SUPER_BLOCK],
        d: 0.0,
        sums: [0; SUPER_BLOCK / SUM_GROUP],
    };
}

/// Quantizes `x` (a multiple of [`SUPER_BLOCK`] values long; a shorter tail is ignored, the
/// caller checks widths) into `out`, replacing its contents.
pub(crate) fn quantize_row(x: &[f32], out: &mut Vec<SuperBlock>) {
    out.clear();
    out.resize(x.len() / SUPER_BLOCK, SuperBlock::ZERO);
    super::quantize_blocks(x, out, (SUPER_BLOCK, PARALLEL_SUPER_BLOCKS), quantize_block);
}

fn quantize_block(values: &[f32], block: &mut SuperBlock) {
    // ggml keeps the first value of the largest magnitude (strictly greater), sign and all:
    // the first value whose magnitude is the largest. (Finding the magnitude first vectorizes;
    // the scan for it with its sign did not.)
    let amax = super::activation::largest_magnitude(values);
    let max = values.iter().copied().find(|v| v.abs() == amax);
    let Some(max) = max.filter(|_| amax != 0.0) else {
        *block = SuperBlock::ZERO;
        return;
    };
    let iscale = -127.0 / max;
    for (q, &v) in block.qs.iter_mut().zip(values) {
        // |iscale * v| <= 127 up to rounding, so only the upper bound needs ggml's MIN; the
        // lower clamp only keeps a NaN input from wrapping.
        let rounded = (iscale * v).round_ties_even().clamp(-128.0, 127.0);
        *q = rounded as i8;
    }
    for (sum, group) in block.sums.iter_mut().zip(block.qs.chunks_exact(SUM_GROUP)) {
        // At most 16 * 128 in magnitude: fits an i16.
        *sum = group.iter().map(|&q| i16::from(q)).sum();
    }
    block.d = 1.0 / iscale;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_follow_ggml_q8_k_quantization() {
        let mut x: Vec<f32> = (0..512).map(|i| (i as f32 - 100.0) * 0.013).collect();
        // The second block: the first of two equal magnitudes (negative) sets the sign, and
        // an exact half rounds to even.
        x[256..512].fill(0.0);
        x[256] = -127.0;
        x[257] = 127.0;
        x[258] = 2.5;
        x[259] = -3.5;
        x[260] = 0.5;
        let mut blocks = Vec::new();
        quantize_row(&x, &mut blocks);
        assert_eq!(blocks.len(), 2);

        let first = &blocks[0];
        let max = 155.0 * 0.013f32;
        let iscale = -127.0 / max;
        assert_eq!(first.d, 1.0 / iscale);
        assert_eq!(first.qs[255], -127, "the largest value maps to -127");
        for (i, q) in first.qs.iter().enumerate() {
            assert_eq!(i32::from(*q), (iscale * x[i]).round_ties_even() as i32);
        }
        let expected: i16 = first.qs[16..32].iter().map(|&q| i16::from(q)).sum();
        assert_eq!(first.sums[1], expected);

        let second = &blocks[1];
        // max = -127 (not 127): iscale = -127 / -127 = 1.
        assert_eq!(second.d, 1.0);
        assert_eq!(&second.qs[..5], &[-127, 127, 2, -4, 0]);
        assert_eq!(second.sums[0], -2);
    }

    #[test]
    fn an_all_zero_block_has_zero_scale_and_sums() {
        let mut blocks = Vec::new();
        quantize_row(&[0.0; 256], &mut blocks);
        assert_eq!(blocks, vec![SuperBlock::ZERO]);
    }
}
