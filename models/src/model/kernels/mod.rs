//! Cairn's own quantized matrix-vector products for decoding (one token, a few rows): Q4_1,
//! Q5_0, Q5_1 and Q8_0 weights read in place from candle's `QTensor` bytes, against activations
//! quantized to 8 bits per block of 32 ([`activation`]), with ggml's arithmetic so that greedy
//! output follows llama.cpp's. candle 0.11 has only scalar dot products for the 4- and 5-bit
//! formats, and re-quantizing them to Q8_0 (which it has in AVX2) changed the results and cost
//! ~1.7x the memory. Q8_0 is here too (the default model's tied output matrix) because candle
//! rounds its activations differently from ggml (half away from zero) and runs it on candle's
//! own thread pool rather than the model's.
//!
//! See [`matvec::QuantizedMatrix`] for the entry point, [`blocks`] for the block layouts and
//! the portable dot product, `avx2` for the SIMD one.

mod activation;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod blocks;
mod error;
mod matvec;

pub(crate) use error::Error;
pub(crate) use matvec::QuantizedMatrix;
