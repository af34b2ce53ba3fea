//! [`WeightFormat`]: which quantized formats the kernels read, in two families by block size.
//! The 32-weight formats ([`BlockFormat`], laid out in [`super::blocks`]) multiply against
//! activations in blocks of 32 ([`super::activation`]); the k-quants ([`SuperBlockFormat`],
//! laid out in [`super::superblocks`]) pack 256 weights per super-block and multiply against
//! 256-value activation blocks ([`super::activation_k`]), as in ggml.

use std::fmt;

use candle_core::quantized::GgmlDType;

use super::blocks::BlockFormat;
use super::superblocks::SuperBlockFormat;

/// A quantized weight format with a decode kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightFormat {
    Block(BlockFormat),
    SuperBlock(SuperBlockFormat),
}

impl WeightFormat {
    /// The format of candle's `dtype`, when the kernels handle it.
    pub(crate) fn from_dtype(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Self::Block(BlockFormat::Q4_0),
            GgmlDType::Q4_1 => Self::Block(BlockFormat::Q4_1),
            GgmlDType::Q5_0 => Self::Block(BlockFormat::Q5_0),
            GgmlDType::Q5_1 => Self::Block(BlockFormat::Q5_1),
            GgmlDType::Q8_0 => Self::Block(BlockFormat::Q8_0),
            GgmlDType::Q4K => Self::SuperBlock(SuperBlockFormat::Q4K),
            GgmlDType::Q5K => Self::SuperBlock(SuperBlockFormat::Q5K),
            GgmlDType::Q6K => Self::SuperBlock(SuperBlockFormat::Q6K),
            _ => return None,
        })
    }

    /// Weights per block: a row's width must be a multiple of it.
    pub(crate) const fn block_len(self) -> usize {
        match self {
            Self::Block(_) => super::activation::BLOCK,
            Self::SuperBlock(_) => super::activation_k::SUPER_BLOCK,
        }
    }

    /// Bytes per block of [`WeightFormat::block_len`] weights.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Self::Block(format) => format.block_bytes(),
            Self::SuperBlock(format) => format.block_bytes(),
        }
    }
}

/// The order of a dot product's float operations: ggml has two kinds of kernel, and llama.cpp
/// picks one per matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accumulation {
    /// `ggml_vec_dot_*`: per block, eight f32 lanes each add `d_w * d_a` times their integer
    /// sum (fused); the lanes are summed at the end of the row.
    Lanes,
    /// ggml's kernels for eight interleaved ("repacked") rows, `ggml_gemv_q4_0_8x8_q8_0` and
    /// `ggml_gemv_q4_K_8x8_q8_K`: per block, one f32 sum per row adds the block's whole
    /// integer sum times `d_w * d_a` (fused); k-quant offsets go to a second sum that is
    /// subtracted at the end.
    Rows,
    /// What the repacked kernels do for each whole group of four tokens of a batch
    /// (`ggml_gemm_q4_K_8x8_q8_K`; the tokens left over take [`Accumulation::Rows`]): as
    /// `Rows`, but Q4_K's fused steps come per 64 weights instead of per super-block, four
    /// per super-block for the products and four for the offsets. (Q4_0's repacked GEMM steps
    /// per block as its GEMV does, so for the 32-weight formats this is `Rows`.)
    RowsBatched,
    /// llama.cpp's tiled k-quant matmul (`ggml/src/ggml-cpu/tiled`), which it takes for
    /// batches of [`TILED_MIN_TOKENS`] or more against k-quant matrices it did not repack:
    /// per super-block, `d_w` times the integer sum, less `dmin_w` times the offsets' integer
    /// sum (fused), times `d_a` into one f32 sum per product (fused).
    Tiled,
}

/// The smallest batch llama.cpp's tiled k-quant matmul takes (`ggml_tiled_min_batch`).
pub(crate) const TILED_MIN_TOKENS: usize = 8;

impl Accumulation {
    /// The order for a batch of `tokens` k-quant activations: llama.cpp multiplies batches of
    /// [`TILED_MIN_TOKENS`] or more by the matrices it did not repack in its tiled kernel.
    pub(crate) fn for_k_quant_batch(self, tokens: usize) -> Self {
        match self {
            Self::Lanes if tokens >= TILED_MIN_TOKENS => Self::Tiled,
            other => other,
        }
    }

    /// The order for the first `tokens - tokens % 4` tokens of a batch, which llama.cpp's
    /// repacked kernels take four at a time.
    pub(crate) fn batched(self) -> Self {
        match self {
            Self::Rows => Self::RowsBatched,
            other => other,
        }
    }

    /// What llama.cpp runs for a `format` matrix of `rows` rows on an AVX2 CPU: the repacked
    /// kernels for Q4_0 and Q4_K when the rows come in whole groups of eight (its
    /// `ggml_repack_get_optimal_repack_type`), the vector dot products otherwise. The portable
    /// kernels follow the same choice, so results do not depend on the CPU.
    pub(crate) fn for_matrix(format: WeightFormat, rows: usize) -> Self {
        let repacked = matches!(
            format,
            WeightFormat::Block(BlockFormat::Q4_0)
                | WeightFormat::SuperBlock(SuperBlockFormat::Q4K)
        );
        if repacked && rows.is_multiple_of(8) {
            Self::Rows
        } else {
            Self::Lanes
        }
    }
}

/// Where a kernel writes the products of a tile of weight rows with a batch of token rows:
/// the product of weight row `r` (counted from the tile's first row) with token `t` goes to
/// `values[t * stride + r]`, so that a tile of a `(tokens, rows)` output is written in place.
pub(crate) struct Products<'a> {
    pub values: &'a mut [f32],
    pub stride: usize,
}

impl Products<'_> {
    /// Stores one product (bounds-checked: the kernels' own loads are the unchecked part).
    #[inline]
    pub(crate) fn set(&mut self, row: usize, token: usize, value: f32) {
        self.values[token * self.stride + row] = value;
    }
}

/// ggml's name of the format (`Q4_1`, `Q4_K`), for messages.
impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Block(BlockFormat::Q4_0) => "Q4_0",
            Self::Block(BlockFormat::Q4_1) => "Q4_1",
            Self::Block(BlockFormat::Q5_0) => "Q5_0",
            Self::Block(BlockFormat::Q5_1) => "Q5_1",
            Self::Block(BlockFormat::Q8_0) => "Q8_0",
            Self::SuperBlock(SuperBlockFormat::Q4K) => "Q4_K",
            Self::SuperBlock(SuperBlockFormat::Q5K) => "Q5_K",
            Self::SuperBlock(SuperBlockFormat::Q6K) => "Q6_K",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repacked_order_only_where_llama_cpp_repacks() {
        let q4k = WeightFormat::SuperBlock(SuperBlockFormat::Q4K);
        let q4_0 = WeightFormat::Block(BlockFormat::Q4_0);
        assert_eq!(Accumulation::for_matrix(q4k, 896), Accumulation::Rows);
        assert_eq!(Accumulation::for_matrix(q4_0, 64), Accumulation::Rows);
        assert_eq!(Accumulation::for_matrix(q4k, 900), Accumulation::Lanes);
        for other in [
            WeightFormat::SuperBlock(SuperBlockFormat::Q6K),
            WeightFormat::SuperBlock(SuperBlockFormat::Q5K),
            WeightFormat::Block(BlockFormat::Q5_0),
            WeightFormat::Block(BlockFormat::Q8_0),
        ] {
            assert_eq!(Accumulation::for_matrix(other, 896), Accumulation::Lanes);
        }
    }
}
