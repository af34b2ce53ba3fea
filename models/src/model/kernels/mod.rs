//! Cairn's own quantized matrix-vector products for decoding (one token, a few rows): Q4_1,
//! Q5_0 and Q5_1 weights read in place from candle's `QTensor` bytes, against activations
//! quantized to 8 bits per block of 32 ([`activation`]), with ggml's arithmetic so that greedy
//! output follows llama.cpp's. candle 0.11 has only scalar dot products for these formats, and
//! re-quantizing the weights to a format it has SIMD code for (Q8_0) changed the results and
//! cost ~1.7x the memory. See [`matvec::QuantizedMatrix`] for the entry point, [`blocks`] for the
//! block layouts and the portable dot product, `avx2` for the SIMD one.

mod activation;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod blocks;
mod error;
mod matvec;

pub(crate) use error::Error;
pub(crate) use matvec::QuantizedMatrix;
