//! [`TextTokenizer`]: the model's tokenizer, built from the GGUF metadata
//! ([`crate::tokenizer_gguf`]) or, when present, from a `tokenizer.json` next to the model
//! (`<model>.tokenizer.json` first, then `tokenizer.json` in the same directory).
//!
//! Encoding never adds BOS/EOS and always matches special tokens such as `<|im_start|>` as
//! single ids, like llama.cpp with `parse_special`; decoding keeps special tokens' text.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::Error;
use crate::gguf::GgufFile;
use crate::tokenizer_gguf::{SpecialIds, tokenizer_from_gguf};

/// A tokenizer plus the special ids generation needs.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// The tokenizer as a `tokenizer.json` document, made when first asked for.
    document: OnceLock<Value>,
    specials: SpecialIds,
    source: TokenizerSource,
}

/// Where a tokenizer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSource {
    /// Built from the GGUF file's own metadata.
    GgufMetadata,
    /// Read from a `tokenizer.json` file.
    File(PathBuf),
}

impl TextTokenizer {
    /// Loads the tokenizer for the model at `gguf.path()`.
    pub(crate) fn load(gguf: &GgufFile) -> Result<Self, Error> {
        let from_metadata = tokenizer_from_gguf(gguf);
        if let Some(path) = sidecar_tokenizer(gguf.path()) {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let document: Value = serde_json::from_str(&text).map_err(|err| Error::Tokenizer {
                reason: format!("{} is not valid JSON: {err}", path.display()),
            })?;
            let specials = from_metadata.map(|(_, s)| s).unwrap_or_default();
            tracing::info!(path = %path.display(), "using tokenizer.json next to the model");
            return Self::from_document(document, specials, TokenizerSource::File(path));
        }
        let (inner, specials) = from_metadata?;
        Ok(Self {
            inner,
            document: OnceLock::new(),
            specials,
            source: TokenizerSource::GgufMetadata,
        })
    }

    fn from_document(
        document: Value,
        specials: SpecialIds,
        source: TokenizerSource,
    ) -> Result<Self, Error> {
        let text = document.to_string();
        let inner: tokenizers::Tokenizer = text.parse().map_err(|err| Error::Tokenizer {
            reason: format!("{err}"),
        })?;
        Ok(Self {
            inner,
            document: OnceLock::from(document),
            specials,
            source,
        })
    }

    /// Token ids for `text`: no BOS added, special tokens parsed as single ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|err| Error::Tokenize {
                action: "encode",
                reason: err.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text for `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        self.inner
            .decode(ids, false)
            .map_err(|err| Error::Tokenize {
                action: "decode",
                reason: err.to_string(),
            })
    }

    /// The id of a token given by its exact vocabulary string (e.g. `<|im_end|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The tokenizer as a Hugging Face `tokenizer.json` document.
    pub fn to_tokenizer_json(&self) -> String {
        self.document().to_string()
    }

    /// Where this tokenizer came from.
    pub fn source(&self) -> &TokenizerSource {
        &self.source
    }

    pub(crate) fn bos_id(&self) -> Option<u32> {
        self.specials.bos
    }

    pub(crate) fn add_bos(&self) -> bool {
        self.specials.add_bos
    }

    /// Ids that end a generation: EOS and end-of-turn from the metadata.
    pub(crate) fn stop_ids(&self) -> Vec<u32> {
        [self.specials.eos, self.specials.eot]
            .into_iter()
            .flatten()
            .collect()
    }

    pub(crate) fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The tokenizer.json document (used to derive token bytes for constrained decoding).
    pub(crate) fn document(&self) -> &Value {
        self.document
            .get_or_init(|| serde_json::to_value(&self.inner).unwrap_or(Value::Null))
    }
}

fn sidecar_tokenizer(model: &Path) -> Option<PathBuf> {
    let dir = model.parent()?;
    let stem = model.file_stem()?.to_string_lossy().into_owned();
    [
        dir.join(format!("{stem}.tokenizer.json")),
        dir.join("tokenizer.json"),
    ]
    .into_iter()
    .find(|candidate| candidate.is_file())
}

/// Loads only the tokenizer of the GGUF model at `path` (no weights), e.g. to count tokens.
pub fn load_tokenizer(path: &Path) -> Result<TextTokenizer, Error> {
    let gguf = GgufFile::open(path)?;
    TextTokenizer::load(&gguf)
}
