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

use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Result, Tensor};

use super::kernels::QuantizedMatrix;
use crate::Error;
use crate::error::CandleContext;
use crate::gguf::GgufFile;

/// Who multiplies.
#[derive(Clone)]
enum Multiply {
    Kernel(QuantizedMatrix),
    Candle(QMatMul),
}

/// A weight matrix and its optional bias; cloning shares the weights (tied embeddings).
#[derive(Clone)]
pub(crate) struct Linear {
    multiply: Multiply,
    bias: Option<Tensor>,
}

impl Linear {
    /// Tensor `name` of `gguf`: read in place from the mapped file where the kernels take its
    /// format, read into candle's `QMatMul` otherwise.
    pub(crate) fn load(
        gguf: &mut GgufFile,
        name: &str,
        bias: Option<Tensor>,
    ) -> std::result::Result<Self, Error> {
        let stored = gguf.stored_tensor(name)?;
        let matrix = QuantizedMatrix::new(stored.dtype, &stored.dims, stored.bytes)
            .map_err(candle_core::Error::wrap)
            .context(|| format!("prepare {name}"))?;
        let multiply = match matrix {
            Some(matrix) => Multiply::Kernel(matrix),
            None => {
                let weights = gguf.tensor(name)?;
                Multiply::Candle(
                    QMatMul::from_qtensor(weights).context(|| format!("prepare {name}"))?,
                )
            }
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

    /// The rows `ids` as f32, `(1, ids.len(), columns)`: the matrix as an embedding table.
    pub(crate) fn embed(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        match &self.multiply {
            Multiply::Kernel(matrix) => {
                let rows = matrix
                    .dequantize_rows(ids)
                    .map_err(candle_core::Error::wrap)?;
                let columns = rows.len() / ids.len().max(1);
                Tensor::from_vec(rows, (1, ids.len(), columns), device)
            }
            Multiply::Candle(matmul) => matmul.embedding(&Tensor::new(ids, device)?.unsqueeze(0)?),
        }
    }
}
