//! What a GGUF file is, read from its header and tensor table alone (no weights loaded):
//! `cairn model info`. An air-gapped team checks a file with it before pointing
//! `CAIRN_MODEL` at it, so it reports whether Cairn can run the architecture and, when not,
//! which ones it can.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Error;
use crate::family::{family_for, supported_architectures};
use crate::gguf::GgufFile;

/// The header of one GGUF file.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub file_bytes: u64,
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// Whether Cairn has a backbone for this architecture.
    pub supported: bool,
    /// The architectures Cairn runs (so an unsupported file's report says what would work).
    pub supported_architectures: String,
    pub context_length: Option<u32>,
    pub embedding_length: Option<u32>,
    pub layers: Option<u32>,
    pub attention_heads: Option<u32>,
    pub kv_heads: Option<u32>,
    /// Tokens in the vocabulary (`tokenizer.ggml.tokens`).
    pub vocab_size: Option<usize>,
    /// `tokenizer.ggml.model` (`gpt2` for byte-level BPE, `llama` for SentencePiece).
    pub tokenizer: Option<String>,
    /// Whether the file carries a Jinja chat template.
    pub has_chat_template: bool,
    pub tensors: usize,
    pub parameters: u64,
    /// Storage formats by name (`Q4_K`, `F32`, ...): how many tensors and weights use each.
    pub formats: BTreeMap<String, FormatUse>,
}

/// How much of a model one storage format holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FormatUse {
    pub tensors: usize,
    pub parameters: u64,
}

/// Reads `path`'s header and tensor table.
pub fn inspect(path: &Path) -> Result<ModelInfo, Error> {
    let gguf = GgufFile::open(path)?;
    let file_bytes = std::fs::metadata(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let architecture = gguf.architecture()?;
    let key = |suffix: &str| format!("{architecture}.{suffix}");
    let mut formats: BTreeMap<String, FormatUse> = BTreeMap::new();
    let mut tensors = 0;
    let mut parameters = 0u64;
    for (_, dtype, elements) in gguf.tensor_table() {
        let entry = formats.entry(format!("{dtype:?}")).or_default();
        entry.tensors += 1;
        entry.parameters += elements as u64;
        tensors += 1;
        parameters += elements as u64;
    }
    Ok(ModelInfo {
        path: path.to_path_buf(),
        file_bytes,
        supported: family_for(&architecture).is_some(),
        supported_architectures: supported_architectures(),
        name: gguf.optional_string("general.name")?,
        context_length: gguf.optional_u32(&key("context_length"))?,
        embedding_length: gguf.optional_u32(&key("embedding_length"))?,
        layers: gguf.optional_u32(&key("block_count"))?,
        attention_heads: gguf.optional_u32(&key("attention.head_count"))?,
        kv_heads: gguf.optional_u32(&key("attention.head_count_kv"))?,
        vocab_size: gguf.array_len("tokenizer.ggml.tokens"),
        tokenizer: gguf.optional_string("tokenizer.ggml.model")?,
        has_chat_template: gguf
            .optional_string("tokenizer.chat_template")?
            .is_some_and(|t| !t.is_empty()),
        tensors,
        parameters,
        architecture,
        formats,
    })
}
