//! The table of supported model families: GGUF `general.architecture` → how to build the
//! backbone and which chat template to fall back on. Adding a llama-like architecture is one
//! row here.

use crate::chat::ChatTemplateKind;
use crate::model::delegated::DelegatedKind;
use crate::model::llama::{LlamaVariant, RopeStyle};

/// How a family's weights are run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BackboneKind {
    /// Cairn's own llama-style decoder on Cairn's quantized kernels.
    Llama(LlamaVariant),
    /// A candle-transformers model.
    Delegated(DelegatedKind),
}

/// One supported architecture.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Family {
    pub architecture: &'static str,
    pub backbone: BackboneKind,
    /// Used when neither the GGUF chat template nor the vocabulary identifies one.
    pub default_template: ChatTemplateKind,
}

const LLAMA: LlamaVariant = LlamaVariant {
    rope: RopeStyle::Interleaved,
    qkv_bias: false,
    qk_norm: false,
};

pub(crate) const FAMILIES: &[Family] = &[
    Family {
        architecture: "llama",
        backbone: BackboneKind::Llama(LLAMA),
        default_template: ChatTemplateKind::Plain,
    },
    Family {
        architecture: "mistral",
        backbone: BackboneKind::Llama(LLAMA),
        default_template: ChatTemplateKind::Plain,
    },
    Family {
        architecture: "qwen2",
        backbone: BackboneKind::Llama(LlamaVariant {
            rope: RopeStyle::Neox,
            qkv_bias: true,
            qk_norm: false,
        }),
        default_template: ChatTemplateKind::ChatMl,
    },
    Family {
        architecture: "qwen3",
        backbone: BackboneKind::Llama(LlamaVariant {
            rope: RopeStyle::Neox,
            qkv_bias: false,
            qk_norm: true,
        }),
        default_template: ChatTemplateKind::ChatMl,
    },
    Family {
        architecture: "gemma3",
        backbone: BackboneKind::Delegated(DelegatedKind::Gemma3),
        default_template: ChatTemplateKind::Gemma,
    },
    Family {
        architecture: "phi3",
        backbone: BackboneKind::Delegated(DelegatedKind::Phi3),
        default_template: ChatTemplateKind::Phi3,
    },
];

/// The family for `architecture`, if supported.
pub(crate) fn family_for(architecture: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.architecture == architecture)
}

/// Comma-separated list of supported architectures, for error messages.
pub(crate) fn supported_architectures() -> String {
    FAMILIES
        .iter()
        .map(|f| f.architecture)
        .collect::<Vec<_>>()
        .join(", ")
}
