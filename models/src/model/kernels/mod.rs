//! Cairn's own quantized matrix products, for decoding (one token) and prefill (a batch): Q4_0,
//! Q4_1, Q5_0, Q5_1 and Q8_0 weights (32 per block) against activations quantized to 8 bits
//! per block of 32 ([`activation`]), and the k-quants Q4_K, Q5_K and Q6_K (256 per
//! super-block) against activations quantized per 256 as ggml's Q8_K ([`activation_k`]) —
//! all read in place from candle's `QTensor` bytes, with ggml's arithmetic so that greedy
//! output follows llama.cpp's. candle 0.11 has only scalar dot products for the 4- and 5-bit
//! 32-weight formats, and re-quantizing them to Q8_0 (which it has in AVX2) changed the
//! results and cost ~1.7x the memory. Q8_0 is here too (the default model's tied output
//! matrix) because candle rounds its activations differently from ggml (half away from zero)
//! and runs it on candle's own thread pool rather than the model's; the same two reasons
//! (candle's Q8_K rounds half away from zero too) brought the k-quants here.
//!
//! See [`matvec::QuantizedMatrix`] for the entry point, [`format`] for the formats,
//! [`blocks`] and [`superblocks`] for the block layouts and the portable dot products,
//! `avx2` and `avx2_superblocks` for the SIMD ones, `panels` (with `avx2_panels` and
//! `avx512_panels`) for k-quant batches.

mod activation;
mod activation_k;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_panels;
#[cfg(target_arch = "x86_64")]
mod avx2_superblocks;
#[cfg(target_arch = "x86_64")]
mod avx512_panels;
mod blocks;
mod error;
mod format;
mod matvec;
#[cfg(target_arch = "x86_64")]
mod panels;
mod superblocks;

pub(crate) use error::Error;

use rayon::prelude::*;

/// The little-endian f16 at `offset` of a block (its scales), as f32.
fn f16_at(block: &[u8], offset: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([block[offset], block[offset + 1]])).to_f32()
}

/// Fills `out` with one block per `unit` values of `x` through `quantize`. A prompt's
/// activations are quantized on the current pool (the model's) in tasks of `per_task` whole
/// blocks: each block is quantized alone, so the split changes no value. (On the calling
/// thread alone this took ~3% of a two-thread prefill, all of it serial.)
fn quantize_blocks<B: Send>(
    x: &[f32],
    out: &mut [B],
    (unit, per_task): (usize, usize),
    quantize: impl Fn(&[f32], &mut B) + Sync,
) {
    let run = |(values, blocks): (&[f32], &mut [B])| {
        for (values, block) in values.chunks_exact(unit).zip(blocks) {
            quantize(values, block);
        }
    };
    if out.len() >= 2 * per_task {
        x.par_chunks(per_task * unit)
            .zip(out.par_chunks_mut(per_task))
            .for_each(run);
    } else {
        run((x, out));
    }
}
pub(crate) use matvec::QuantizedMatrix;
