//! `cairn-models`: the in-process local model tier of Cairn (see DESIGN.md, "Models").
//!
//! Loads a quantized GGUF model with candle ([`LocalModel::load`]), builds its tokenizer from
//! the GGUF metadata, formats chats with the family's template, and generates text (greedy or
//! sampled, stop sequences, streaming, JSON-schema-constrained decoding, map-reduce
//! summaries). The engine holds a loaded model as `Arc<dyn LanguageModel>`.

mod api;
pub mod bench;
mod chat;
mod constrained;
mod decode_width;
mod error;
mod family;
mod generate;
mod gguf;
pub mod inspect;
mod local;
mod mapped;
mod model;
mod paths;
mod sampling;
pub mod summarize;
pub mod threads;
mod tokenizer;
mod tokenizer_gguf;

pub use api::{
    FinishReason, GenerateParams, Generation, LanguageModel, LoadOptions, LoadProgress, LoadStage,
    ModelIdentity,
};
pub use chat::{ChatMessage, ChatTemplate, ChatTemplateKind, Role};
pub use error::Error;
pub use local::LocalModel;
pub use paths::{DEFAULT_MODEL_FILE, DEFAULT_MODEL_SHA256, default_model_path, model_cache_dir};
pub use tokenizer::{TextTokenizer, TokenizerSource, load_tokenizer};
