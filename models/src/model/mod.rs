//! Model backbones: the transformer forward passes behind one [`Backbone`] trait. See
//! [`llama`] (our own llama/qwen2/qwen3 implementation on Cairn's quantized kernels) and
//! [`delegated`] (gemma3 and phi3 through candle-transformers).

pub(crate) mod attention;
pub(crate) mod attention_tiled;
pub(crate) mod delegated;
pub(crate) mod elementwise;
pub(crate) mod kernels;
pub(crate) mod kv_cache;
pub(crate) mod linear;
pub(crate) mod llama;

use candle_core::Tensor;

use crate::Error;

/// A decoder-only transformer with a KV cache.
pub(crate) trait Backbone: Send {
    /// Runs `tokens` at positions `index_pos..` and returns the logits of the last position,
    /// shape `(vocab,)`, in f32. `index_pos == 0` starts a new sequence.
    fn forward(&mut self, tokens: &[u32], index_pos: usize) -> Result<Tensor, Error>;

    /// Drops the cached keys and values.
    fn clear_kv_cache(&mut self);
}
