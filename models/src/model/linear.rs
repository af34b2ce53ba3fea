//! [`Linear`]: a weight matrix multiplied in its quantized form, for decoding and prefill
//! alike. Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K weights go through Cairn's own
//! kernels ([`super::kernels`]), which quantize the activations as ggml does and multiply a
//! batch of tokens tile by tile: the same arithmetic as llama.cpp, in prefill as in decoding,
//! and no copy of the weights beyond the file's blocks. (Prefill used to multiply f32 copies
//! of the weights made at load through candle's dense gemm: ~5x the file's size in memory,
//! and f32 products that made greedy output drift from llama.cpp's after low-margin tokens.)
//!
//! candle 0.11 has only scalar dot products for the 4- and 5-bit 32-weight formats, and for
//! the k-quants it quantizes the activations unlike ggml and runs on its own spin-waiting pool
//! rather than the model's. Other formats (Q2_K, Q3_K, f16, f32) go through candle's
//! `QMatMul`.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};

use super::kernels::QuantizedMatrix;

/// Who multiplies.
enum Multiply {
    Kernel(QuantizedMatrix),
    Candle(QMatMul),
}

pub(crate) struct Linear {
    multiply: Multiply,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn new(weights: QTensor, bias: Option<Tensor>) -> Result<Self> {
        Self::shared(Arc::new(weights), bias)
    }

    /// Like [`Linear::new`], for weights also used elsewhere (tied embeddings).
    pub(crate) fn shared(quantized: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        let multiply =
            match QuantizedMatrix::new(quantized.clone()).map_err(candle_core::Error::wrap)? {
                Some(matrix) => Multiply::Kernel(matrix),
                None => Multiply::Candle(QMatMul::from_arc(quantized)?),
            };
        Ok(Self { multiply, bias })
    }

    /// `x`: `(batch, seq, in)` → `(batch, seq, out)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.multiply {
            Multiply::Kernel(matrix) => matrix.forward(x)?,
            Multiply::Candle(matmul) => matmul.forward(x)?,
        };
        match &self.bias {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        }
    }
}
