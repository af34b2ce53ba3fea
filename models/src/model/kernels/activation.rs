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
    for (values, block) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        *block = quantize_block(values);
    }
}

fn quantize_block(values: &[f32]) -> ActivationBlock {
    let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let scale = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; BLOCK];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(values) {
        // |v * scale| <= 127 up to rounding; the clamp is the saturation of ggml's packs.
        let rounded = (v * scale).round_ties_even() as i32;
        sum += rounded;
        *q = rounded.clamp(i32::from(i8::MIN), i32::from(i8::MAX)) as i8;
    }
    ActivationBlock {
        qs,
        d: f16::from_f32(d).to_f32(),
        s: f16::from_f32(d * sum as f32).to_f32(),
    }
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
    fn an_all_zero_block_has_zero_scale() {
        let mut blocks = Vec::new();
        quantize_row(&[0.0; 32], &mut blocks);
        assert_eq!(blocks, vec![ActivationBlock::ZERO]);
    }
}
