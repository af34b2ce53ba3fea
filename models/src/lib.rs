//! `cairn-models`: the in-process local model tier of Cairn (see DESIGN.md, "Models").
//!
//! Loads a quantized GGUF model with candle, builds its tokenizer from the GGUF metadata,
//! formats chats with the family's template, and generates text (greedy or sampled, with
//! stop sequences, streaming and JSON-schema-constrained decoding). The engine holds a loaded
//! model as `Arc<dyn LanguageModel>`.

mod error;
mod gguf;
mod paths;
mod tokenizer;
mod tokenizer_gguf;

pub use error::Error;
pub use paths::{default_model_path, model_cache_dir, DEFAULT_MODEL_FILE, DEFAULT_MODEL_SHA256};
pub use tokenizer::{load_tokenizer, TextTokenizer, TokenizerSource};
