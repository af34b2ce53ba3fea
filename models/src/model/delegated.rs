//! Families run by candle-transformers' own quantized models (gemma3, phi3): candle's
//! quantized matmuls rather than Cairn's kernels, but the same [`Backbone`] interface. Both reset their KV cache when called at
//! position 0, which is how every generation starts.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{quantized_gemma3, quantized_phi3};

use super::Backbone;
use crate::Error;
use crate::error::CandleContext;
use crate::gguf::GgufFile;

/// Which candle-transformers model to build.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DelegatedKind {
    Gemma3,
    Phi3,
}

enum Weights {
    Gemma3(quantized_gemma3::ModelWeights),
    Phi3(quantized_phi3::ModelWeights),
}

pub(crate) struct Delegated {
    weights: Weights,
}

impl Delegated {
    pub(crate) fn load(gguf: GgufFile, kind: DelegatedKind) -> Result<Self, Error> {
        let (path, content, mut reader) = gguf.into_parts();
        let device = Device::Cpu;
        let weights = match kind {
            DelegatedKind::Gemma3 => Weights::Gemma3(
                quantized_gemma3::ModelWeights::from_gguf(content, &mut reader, &device)
                    .context(|| format!("load gemma3 weights from {}", path.display()))?,
            ),
            DelegatedKind::Phi3 => Weights::Phi3(
                quantized_phi3::ModelWeights::from_gguf(false, content, &mut reader, &device)
                    .context(|| format!("load phi3 weights from {}", path.display()))?,
            ),
        };
        Ok(Self { weights })
    }
}

impl Backbone for Delegated {
    fn forward(&mut self, tokens: &[u32], index_pos: usize) -> Result<Tensor, Error> {
        let mut run = || -> candle_core::Result<Tensor> {
            let ids = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
            let logits = match &mut self.weights {
                Weights::Gemma3(m) => m.forward(&ids, index_pos)?,
                Weights::Phi3(m) => m.forward(&ids, index_pos)?,
            };
            // Some models return logits for every position; keep the last one.
            let logits = match logits.rank() {
                3 => logits.narrow(1, logits.dim(1)? - 1, 1)?,
                _ => logits,
            };
            logits.flatten_all()?.to_dtype(DType::F32)
        };
        run().context(|| format!("run the model on {} tokens", tokens.len()))
    }

    fn clear_kv_cache(&mut self) {
        // Both models reset their caches on a forward pass at position 0.
    }
}
