//! [`Linear`]: a weight matrix with two execution paths. Decoding (one token) multiplies
//! with the quantized weights (candle's `QMatMul`, SIMD dot products on the quantized blocks).
//! Prefill (many tokens) multiplies with f32 weights through candle's dense gemm, which has a
//! batched, cache-blocked kernel that the quantized path lacks: ~4x faster per token on the
//! default model. The f32 copy is either made once at load (`Resident`, 4 bytes per weight)
//! or made per call (`OnTheFly`, for models whose f32 copy would not fit the memory budget;
//! dequantizing one matrix costs far less than multiplying it by hundreds of tokens).
//!
//! candle 0.11 has no SIMD dot product for Q4_1, Q5_0 and Q5_1 on x86 (it runs scalar code);
//! such decode weights are re-quantized to Q8_0 at load, which has an AVX2 kernel: ~1.7x the
//! memory of Q4_1 for the quantized copy, ~1.7x faster decoding, and greedy output unchanged
//! on the reference vectors.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};

/// How prefill gets its f32 weights.
pub(crate) enum DenseWeights {
    Resident(Tensor),
    OnTheFly,
}

pub(crate) struct Linear {
    quantized: Arc<QTensor>,
    matmul: QMatMul,
    dense: DenseWeights,
    bias: Option<Tensor>,
}

/// Formats whose dot product candle 0.11 only has as scalar code on x86; their decode
/// weights are re-quantized to Q8_0 (AVX2 dot product) at load.
const WITHOUT_SIMD_DOT: &[GgmlDType] = &[GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// Re-quantizes `weights` to Q8_0 when candle has no SIMD dot product for their format.
pub(crate) fn with_simd_dot(weights: QTensor) -> Result<QTensor> {
    if WITHOUT_SIMD_DOT.contains(&weights.dtype()) {
        QTensor::quantize(&weights.dequantize(&weights.device())?, GgmlDType::Q8_0)
    } else {
        Ok(weights)
    }
}

/// Prefill batches shorter than this use the quantized path (dense gemm wins from a few rows).
const DENSE_MIN_ROWS: usize = 4;

impl Linear {
    pub(crate) fn new(weights: QTensor, bias: Option<Tensor>, resident: bool) -> Result<Self> {
        let quantized = Arc::new(with_simd_dot(weights)?);
        let matmul = QMatMul::from_arc(quantized.clone())?;
        let dense = match (&matmul, resident) {
            // Already f32/f16 weights: QMatMul holds them dense, nothing to add.
            (QMatMul::Tensor(_) | QMatMul::TensorF16(_), _) => DenseWeights::OnTheFly,
            (QMatMul::QTensor(_), true) => {
                DenseWeights::Resident(quantized.dequantize(&quantized.device())?)
            }
            (QMatMul::QTensor(_), false) => DenseWeights::OnTheFly,
        };
        Ok(Self {
            quantized,
            matmul,
            dense,
            bias,
        })
    }

    /// `x`: `(batch, seq, in)` → `(batch, seq, out)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dims().iter().rev().skip(1).product::<usize>();
        let y = if rows >= DENSE_MIN_ROWS && matches!(self.matmul, QMatMul::QTensor(_)) {
            match &self.dense {
                DenseWeights::Resident(w) => x.broadcast_matmul(&w.t()?)?,
                DenseWeights::OnTheFly => {
                    let w = self.quantized.dequantize(&self.quantized.device())?;
                    x.broadcast_matmul(&w.t()?)?
                }
            }
        } else {
            self.matmul.forward(x)?
        };
        match &self.bias {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        }
    }
}
