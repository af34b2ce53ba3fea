//! JSON-schema-constrained decoding with llguidance: at every step the grammar engine says
//! which token ids can continue a document valid against the schema, and the sampler only
//! picks among those. The token trie is built once per model from the tokenizer's
//! `tokenizer.json` document (token bytes), then shared by every constrained generation.
//!
//! Whitespace is fixed (`", "` and `": "`, no free-form whitespace) unless the schema sets its
//! own `x-guidance` options: a small model given free whitespace can loop on newlines.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{
    InferenceCapabilities, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv,
};
use llguidance::{Constraint, ParserFactory};
use serde_json::{Value, json};

use crate::Error;
use crate::tokenizer::TextTokenizer;

/// Builds per-generation JSON constraints for one model.
pub(crate) struct JsonConstraints {
    factory: ParserFactory,
}

struct Env {
    trie: TokTrie,
    tokenizer: tokenizers::Tokenizer,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        let text = String::from_utf8_lossy(s);
        match self.tokenizer.encode_fast(text.as_ref(), false) {
            Ok(encoding) => encoding.get_ids().to_vec(),
            Err(err) => {
                tracing::warn!(%err, "tokenizing for the JSON constraint failed");
                Vec::new()
            }
        }
    }
}

fn constraint_error(reason: impl std::fmt::Display) -> Error {
    Error::Constraint {
        reason: reason.to_string(),
    }
}

impl JsonConstraints {
    /// `vocab_size` is the width of the model's logits; `end_id` the token that ends the
    /// answer (end-of-turn or EOS).
    pub(crate) fn new(
        tokenizer: &TextTokenizer,
        vocab_size: usize,
        end_id: u32,
    ) -> Result<Self, Error> {
        let mut token_bytes = llguidance::token_bytes_from_tokenizer_json(tokenizer.document())
            .map_err(constraint_error)?;
        if token_bytes.len() > vocab_size {
            return Err(constraint_error(format!(
                "tokenizer has {} tokens but the model only {vocab_size} logits",
                token_bytes.len()
            )));
        }
        token_bytes.resize(vocab_size, Vec::new());
        let vocab_size_u32 = u32::try_from(vocab_size).map_err(constraint_error)?;
        let mut info = TokRxInfo::new(vocab_size_u32, end_id);
        info.tok_bos = tokenizer.bos_id();
        info.tok_end_of_turn = Some(end_id);
        let trie = TokTrie::from(&info, &token_bytes);
        let env: TokEnv = Arc::new(Env {
            trie,
            tokenizer: tokenizer.inner().clone(),
        });
        let mut factory = ParserFactory::new(
            &env,
            InferenceCapabilities::default(),
            &llguidance::earley::SlicedBiasComputer::general_slices(),
        )
        .map_err(constraint_error)?;
        factory.quiet();
        Ok(Self { factory })
    }

    /// A fresh constraint for one generation.
    pub(crate) fn start(&self, schema: &Value) -> Result<JsonConstraint, Error> {
        let mut schema = schema.clone();
        if let Some(object) = schema.as_object_mut() {
            object.entry("x-guidance").or_insert_with(|| {
                json!({
                    "whitespace_flexible": false,
                    "item_separator": ", ",
                    "key_separator": ": ",
                })
            });
        }
        let grammar = TopLevelGrammar::from_json_schema(schema);
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|err| constraint_error(format!("invalid schema: {err}")))?;
        let mut inner = Constraint::new(parser);
        inner.start_without_prompt();
        Ok(JsonConstraint { inner })
    }
}

/// What the constraint allows next.
pub(crate) enum Step<'a> {
    /// Sample among the ids for which the function returns true.
    Sample(Box<dyn Fn(u32) -> bool + 'a>),
    /// The document is complete.
    Stop,
}

/// The state of one constrained generation.
pub(crate) struct JsonConstraint {
    inner: Constraint,
}

impl JsonConstraint {
    pub(crate) fn next(&mut self) -> Result<Step<'_>, Error> {
        let result = self.inner.compute_mask().map_err(constraint_error)?;
        if result.is_stop() {
            return Ok(Step::Stop);
        }
        match &result.sample_mask {
            Some(mask) => Ok(Step::Sample(Box::new(move |id| mask.is_allowed(id)))),
            None => Err(constraint_error("the grammar engine gave no token mask")),
        }
    }

    /// Records the sampled token; returns true when the document is complete.
    pub(crate) fn commit(&mut self, token: u32) -> Result<bool, Error> {
        let result = self
            .inner
            .commit_token(Some(token))
            .map_err(constraint_error)?;
        Ok(result.stop)
    }
}
