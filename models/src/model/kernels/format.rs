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
