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
//!
//! Inputs and outputs are plain rows of f32, one token after another, in buffers the caller
//! keeps between layers (see [`super::llama`]).

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

/// A `(rows, columns)` weight matrix and its optional bias (`rows` values); cloning shares
/// the weights (tied embeddings).
#[derive(Clone)]
pub(crate) struct Linear {
    multiply: Multiply,
    bias: Option<Vec<f32>>,
    rows: usize,
    columns: usize,
}

impl Linear {
    /// Tensor `name` of `gguf`: read in place from the mapped file where the kernels take its
    /// format, read into candle's `QMatMul` otherwise.
    pub(crate) fn load(
        gguf: &mut GgufFile,
        name: &str,
        bias: Option<Vec<f32>>,
    ) -> std::result::Result<Self, Error> {
        let stored = gguf.stored_tensor(name)?;
        let (rows, columns) = match stored.dims.as_slice() {
            &[rows, columns] if bias.as_ref().is_none_or(|b| b.len() == rows) => (rows, columns),
            dims => {
                return Err(Error::InvalidGguf {
                    path: gguf.path().to_path_buf(),
                    reason: format!(
                        "tensor {name} of shape {dims:?} with a bias of {} values is not a \
                         matrix the model can use",
                        bias.as_ref().map_or(0, Vec::len)
                    ),
                });
            }
        };
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
        Ok(Self {
            multiply,
            bias,
            rows,
            columns,
        })
    }

    /// Output values per token.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// `input`: tokens of `columns` values, one after another → `out`: `rows` values per
    /// token.
    pub(crate) fn multiply(&self, input: &[f32], out: &mut [f32]) -> Result<()> {
        let [()] = Self::multiply_all([self], input, [out])?;
        Ok(())
    }

    /// Each of `linears` applied to the same `input` (a layer's query, key and value, or its
    /// gate and up), into `outputs`: when Cairn's kernels hold every matrix, `input` is
    /// quantized once for all of them, and one token's products are handed to the pool at
    /// once (see [`QuantizedMatrix::multiply_all`]).
    pub(crate) fn multiply_all<const N: usize>(
        linears: [&Linear; N],
        input: &[f32],
        mut outputs: [&mut [f32]; N],
    ) -> Result<[(); N]> {
        let matrices: Vec<&QuantizedMatrix> = linears
            .iter()
            .filter_map(|linear| match &linear.multiply {
                Multiply::Kernel(matrix) => Some(matrix),
                Multiply::Candle(_) => None,
            })
            .collect();
        if matrices.len() == N {
            QuantizedMatrix::multiply_all(&matrices, input, &mut outputs)
                .map_err(candle_core::Error::wrap)?;
        } else {
            for (linear, out) in linears.iter().zip(outputs.iter_mut()) {
                linear.multiply_alone(input, out)?;
            }
        }
        for (linear, out) in linears.iter().zip(outputs.iter_mut()) {
            if let Some(bias) = &linear.bias {
                for row in out.chunks_exact_mut(linear.rows) {
                    for (y, b) in row.iter_mut().zip(bias) {
                        *y += b;
                    }
                }
            }
        }
        Ok([(); N])
    }

    /// This matrix's product on its own: [`Linear::multiply_all`] where candle holds some of
    /// its matrices.
    fn multiply_alone(&self, input: &[f32], out: &mut [f32]) -> Result<()> {
        let matmul = match &self.multiply {
            Multiply::Kernel(matrix) => {
                return matrix
                    .multiply(input, out)
                    .map_err(candle_core::Error::wrap);
            }
            Multiply::Candle(matmul) => matmul,
        };
        let tokens = input.len() / self.columns.max(1);
        if tokens * self.columns != input.len() || out.len() != tokens * self.rows {
            candle_core::bail!(
                "a ({}, {}) matrix cannot take {} input values into {} outputs",
                self.rows,
                self.columns,
                input.len(),
                out.len()
            );
        }
        let x = Tensor::from_slice(input, (tokens, self.columns), &Device::Cpu)?;
        let y: Vec<f32> = matmul
            .forward(&x)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        out.copy_from_slice(&y);
        Ok(())
    }

    /// The rows `ids` as f32 into `out`, one after another: the matrix as an embedding table.
    pub(crate) fn embed(&self, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        match &self.multiply {
            Multiply::Kernel(matrix) => {
                matrix
                    .dequantize_rows(ids, out)
                    .map_err(candle_core::Error::wrap)?;
            }
            Multiply::Candle(matmul) => {
                let rows = matmul.embedding(&Tensor::new(ids, &Device::Cpu)?)?;
                out.extend(
                    rows.to_dtype(candle_core::DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?,
                );
            }
        }
        Ok(())
    }
}
