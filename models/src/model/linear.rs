//! [`Linear`]: a weight matrix with two execution paths. Decoding (one token) multiplies
//! with the quantized weights (SIMD dot products on the quantized blocks, see below).
//! Prefill (many tokens) multiplies with f32 weights through candle's dense gemm, which has a
//! batched, cache-blocked kernel that the quantized path lacks: ~4x faster per token on the
//! default model. The f32 copy is either made once at load (`Resident`, 4 bytes per weight)
//! or made per call (`OnTheFly`, for models whose f32 copy would not fit the memory budget;
//! dequantizing one matrix costs far less than multiplying it by hundreds of tokens).
//!
//! Decoding multiplies Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K weights with
//! Cairn's own kernels ([`super::kernels`]): candle 0.11 has only scalar dot products for the
//! 4- and 5-bit 32-weight formats, and the former workaround (re-quantizing them to Q8_0 at
//! load) cost ~1.7x the memory of Q4_1 and changed the arithmetic enough that greedy output
//! drifted from llama.cpp's; for the k-quants candle has SIMD, but quantizes their activations
//! unlike ggml and runs on its own spin-waiting pool rather than the model's. Other formats
//! (Q2_K, Q3_K, f16) decode through candle's `QMatMul`.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};

use super::kernels::QuantizedMatrix;

/// How prefill gets its f32 weights.
pub(crate) enum DenseWeights {
    Resident(Tensor),
    OnTheFly,
    /// The weights are f32/f16 already and `QMatMul` holds them dense: nothing to add.
    Unquantized,
}

/// How decoding multiplies.
enum Decode {
    Kernel(QuantizedMatrix),
    Candle(QMatMul),
}

pub(crate) struct Linear {
    quantized: Arc<QTensor>,
    decode: Decode,
    dense: DenseWeights,
    bias: Option<Tensor>,
}

/// Prefill batches shorter than this use the quantized path (dense gemm wins from a few rows).
const DENSE_MIN_ROWS: usize = 4;

impl Linear {
    pub(crate) fn new(weights: QTensor, bias: Option<Tensor>, resident: bool) -> Result<Self> {
        Self::shared(Arc::new(weights), bias, resident)
    }

    /// Like [`Linear::new`], for weights also used elsewhere (tied embeddings).
    pub(crate) fn shared(
        quantized: Arc<QTensor>,
        bias: Option<Tensor>,
        resident: bool,
    ) -> Result<Self> {
        let decode =
            match QuantizedMatrix::new(quantized.clone()).map_err(candle_core::Error::wrap)? {
                Some(matrix) => Decode::Kernel(matrix),
                None => Decode::Candle(QMatMul::from_arc(quantized.clone())?),
            };
        let dense = match (&decode, resident) {
            (Decode::Candle(QMatMul::Tensor(_) | QMatMul::TensorF16(_)), _) => {
                DenseWeights::Unquantized
            }
            (_, true) => DenseWeights::Resident(quantized.dequantize(&quantized.device())?),
            (_, false) => DenseWeights::OnTheFly,
        };
        Ok(Self {
            quantized,
            decode,
            dense,
            bias,
        })
    }

    /// `x`: `(batch, seq, in)` → `(batch, seq, out)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dims().iter().rev().skip(1).product::<usize>();
        let dense = match &self.dense {
            _ if rows < DENSE_MIN_ROWS => None,
            DenseWeights::Resident(w) => Some(x.broadcast_matmul(&w.t()?)?),
            DenseWeights::OnTheFly => {
                let w = self.quantized.dequantize(&self.quantized.device())?;
                Some(x.broadcast_matmul(&w.t()?)?)
            }
            DenseWeights::Unquantized => None,
        };
        let y = match (dense, &self.decode) {
            (Some(y), _) => y,
            (None, Decode::Kernel(matrix)) => matrix.forward(x)?,
            (None, Decode::Candle(matmul)) => matmul.forward(x)?,
        };
        match &self.bias {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        }
    }
}
