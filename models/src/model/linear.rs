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
        self.add_bias(y)
    }

    fn add_bias(&self, y: Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        }
    }

    /// Each of `linears` applied to the same `x` (a layer's query, key and value, or its gate
    /// and up): when Cairn's kernels hold every matrix, `x` is quantized once for all of them,
    /// and one token's products are handed to the pool at once (see
    /// [`QuantizedMatrix::multiply_all`]).
    pub(crate) fn forward_all<const N: usize>(
        linears: [&Linear; N],
        x: &Tensor,
    ) -> Result<[Tensor; N]> {
        let matrices: Vec<&QuantizedMatrix> = linears
            .iter()
            .filter_map(|linear| match &linear.multiply {
                Multiply::Kernel(matrix) => Some(matrix),
                Multiply::Candle(_) => None,
            })
            .collect();
        let outputs = if matrices.len() != N {
            linears
                .iter()
                .map(|linear| linear.forward(x))
                .collect::<Result<Vec<_>>>()?
        } else {
            let input: Vec<f32> = x
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            let columns = x.dims().last().copied().unwrap_or(0).max(1);
            let tokens = input.len() / columns;
            let mut values: Vec<Vec<f32>> = matrices
                .iter()
                .map(|m| vec![0.0; tokens * m.rows()])
                .collect();
            let mut outputs: Vec<&mut [f32]> = values.iter_mut().map(Vec::as_mut_slice).collect();
            QuantizedMatrix::multiply_all(&matrices, &input, &mut outputs)
                .map_err(candle_core::Error::wrap)?;
            let mut dims = x.dims().to_vec();
            linears
                .iter()
                .zip(matrices.iter().zip(values))
                .map(|(linear, (matrix, values))| {
                    if let Some(last) = dims.last_mut() {
                        *last = matrix.rows();
                    }
                    linear.add_bias(Tensor::from_vec(values, dims.as_slice(), x.device())?)
                })
                .collect::<Result<Vec<_>>>()?
        };
        outputs
            .try_into()
            .map_err(|_| candle_core::Error::Msg("one output per matrix".to_string()))
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
