//! Builds a Hugging Face `tokenizer.json` document from a GGUF file's `tokenizer.ggml.*`
//! metadata, so one `.gguf` file is all a model needs (see DESIGN.md, "Models").
//!
//! Two vocabulary kinds are supported, as in llama.cpp:
//! - `gpt2`: byte-level BPE (SmolLM2, Qwen, Llama 3). The split regexes come from
//!   `tokenizer.ggml.pre` through [`PRE_TOKENIZERS`], a table copied in spirit from
//!   llama.cpp's pre-tokenizer list.
//! - `llama`: SentencePiece BPE with byte fallback (Llama 2, TinyLlama, Mistral). GGUF stores
//!   scores instead of merges; merges are rebuilt from the scores the way Hugging Face's
//!   SentencePiece converter does (a pair merges with the priority of the piece it makes).

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::Error;
use crate::gguf::GgufFile;

/// GPT-2's split regex, the default for byte-level vocabularies.
const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DIGITS_REGEX: &str = r"\p{N}";

/// One row of the pre-tokenizer table: the `tokenizer.ggml.pre` names it covers, the split
/// regexes applied in order, and whether BPE merges are skipped for whole-word vocabulary hits.
struct PreTokenizer {
    names: &'static [&'static str],
    regexes: &'static [&'static str],
    ignore_merges: bool,
}

const PRE_TOKENIZERS: &[PreTokenizer] = &[
    PreTokenizer {
        names: &[
            "llama-bpe",
            "llama3",
            "falcon3",
            "pixtral",
            "dbrx",
            "smaug-bpe",
        ],
        regexes: &[LLAMA3_REGEX],
        ignore_merges: true,
    },
    PreTokenizer {
        names: &[
            "qwen2",
            "deepseek-r1-qwen",
            "stablelm2",
            "megrez",
            "hunyuan",
        ],
        regexes: &[QWEN2_REGEX],
        ignore_merges: false,
    },
    PreTokenizer {
        names: &[
            "smollm",
            "starcoder",
            "refact",
            "command-r",
            "codeshell",
            "exaone",
            "minerva",
        ],
        regexes: &[DIGITS_REGEX, GPT2_REGEX],
        ignore_merges: false,
    },
    PreTokenizer {
        names: &[
            "default", "gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "olmo",
        ],
        regexes: &[GPT2_REGEX],
        ignore_merges: false,
    },
];

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_BYTE: i32 = 6;

/// The special-token ids a generation loop needs, read from the GGUF metadata.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub add_bos: bool,
}

/// Reads `tokenizer.ggml.*` and returns a `tokenizer.json` document plus special ids.
pub(crate) fn tokenizer_json_from_gguf(gguf: &GgufFile) -> Result<(Value, SpecialIds), Error> {
    let kind = gguf.string("tokenizer.ggml.model")?;
    let tokens = gguf.string_array("tokenizer.ggml.tokens")?;
    if tokens.is_empty() {
        return Err(tokenizer_error("tokenizer.ggml.tokens is empty"));
    }
    let types = gguf
        .optional_i32_array("tokenizer.ggml.token_type")?
        .unwrap_or_else(|| vec![TOKEN_TYPE_NORMAL; tokens.len()]);
    if types.len() != tokens.len() {
        return Err(tokenizer_error(&format!(
            "{} token types for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let specials = SpecialIds {
        bos: gguf.optional_u32("tokenizer.ggml.bos_token_id")?,
        eos: gguf.optional_u32("tokenizer.ggml.eos_token_id")?,
        eot: gguf.optional_u32("tokenizer.ggml.eot_token_id")?,
        add_bos: gguf
            .optional_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(kind == "llama"),
    };

    let vocab = vocab_object(&tokens);
    let added_tokens = added_tokens(&tokens, &types);
    let document = match kind.as_str() {
        "gpt2" => {
            let pre = gguf
                .optional_string("tokenizer.ggml.pre")?
                .unwrap_or_else(|| "default".to_string());
            let row = PRE_TOKENIZERS
                .iter()
                .find(|row| row.names.contains(&pre.as_str()))
                .unwrap_or_else(|| {
                    tracing::warn!(pre, "unknown tokenizer.ggml.pre; using GPT-2 splitting");
                    &PRE_TOKENIZERS[PRE_TOKENIZERS.len() - 1]
                });
            let merges = gguf.string_array("tokenizer.ggml.merges")?;
            byte_level_document(row, vocab, merges, added_tokens)
        }
        "llama" => {
            let scores = gguf
                .optional_f32_array("tokenizer.ggml.scores")?
                .ok_or_else(|| tokenizer_error("tokenizer.ggml.scores is missing"))?;
            if scores.len() != tokens.len() {
                return Err(tokenizer_error(
                    "tokenizer.ggml.scores has the wrong length",
                ));
            }
            let add_space_prefix = gguf
                .optional_bool("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(true);
            let unk = gguf
                .optional_u32("tokenizer.ggml.unknown_token_id")?
                .and_then(|id| tokens.get(id as usize).cloned());
            let merges = sentencepiece_merges(&tokens, &types, &scores);
            sentencepiece_document(vocab, merges, added_tokens, add_space_prefix, unk)
        }
        other => {
            return Err(tokenizer_error(&format!(
                "unsupported tokenizer.ggml.model `{other}` (supported: gpt2, llama)"
            )));
        }
    };
    Ok((document, specials))
}

fn tokenizer_error(reason: &str) -> Error {
    Error::Tokenizer {
        reason: reason.to_string(),
    }
}

/// Token string → id. A duplicated string keeps its first id (as llama.cpp does).
fn vocab_object(tokens: &[String]) -> Value {
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        if !vocab.contains_key(token) {
            vocab.insert(token.clone(), json!(id));
        }
    }
    Value::Object(vocab)
}

/// Control, user-defined and unknown tokens are matched whole in the input, before BPE.
fn added_tokens(tokens: &[String], types: &[i32]) -> Value {
    let added: Vec<Value> = tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, kind))| {
            matches!(
                **kind,
                TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED | TOKEN_TYPE_UNKNOWN
            )
        })
        .filter(|(_, (token, _))| !token.is_empty())
        .map(|(id, (token, kind))| {
            json!({
                "id": id,
                "content": token,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": *kind != TOKEN_TYPE_USER_DEFINED,
            })
        })
        .collect();
    Value::Array(added)
}

fn byte_level_document(
    row: &PreTokenizer,
    vocab: Value,
    merges: Vec<String>,
    added_tokens: Value,
) -> Value {
    let mut pretokenizers: Vec<Value> = row
        .regexes
        .iter()
        .map(|regex| {
            json!({
                "type": "Split",
                "pattern": { "Regex": regex },
                "behavior": "Isolated",
                "invert": false,
            })
        })
        .collect();
    pretokenizers.push(json!({
        "type": "ByteLevel",
        "add_prefix_space": false,
        "trim_offsets": false,
        "use_regex": false,
    }));
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": { "type": "Sequence", "pretokenizers": pretokenizers },
        "post_processor": null,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": false,
            "trim_offsets": false,
            "use_regex": false,
        },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": row.ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    })
}

/// Rebuilds BPE merges from SentencePiece scores: every split of a normal token into two
/// vocabulary pieces is a merge, ranked by the score of the whole token (highest first).
fn sentencepiece_merges(tokens: &[String], types: &[i32], scores: &[f32]) -> Vec<Value> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .rev()
        .map(|(id, token)| (token.as_str(), id))
        .collect();
    let mut ranked: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        if types[id] != TOKEN_TYPE_NORMAL || token.chars().count() < 2 {
            continue;
        }
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if let (Some(&l), Some(&r)) = (ids.get(left), ids.get(right))
                && types[l] != TOKEN_TYPE_BYTE
                && types[r] != TOKEN_TYPE_BYTE
            {
                ranked.push((scores[id], id, l, r));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked
        .into_iter()
        .map(|(_, _, l, r)| json!([tokens[l], tokens[r]]))
        .collect()
}

fn sentencepiece_document(
    vocab: Value,
    merges: Vec<Value>,
    added_tokens: Value,
    add_space_prefix: bool,
    unk: Option<String>,
) -> Value {
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(json!({ "type": "Prepend", "prepend": "\u{2581}" }));
    }
    normalizers.push(json!({
        "type": "Replace",
        "pattern": { "String": " " },
        "content": "\u{2581}",
    }));
    let mut decoders = vec![
        json!({ "type": "Replace", "pattern": { "String": "\u{2581}" }, "content": " " }),
        json!({ "type": "ByteFallback" }),
        json!({ "type": "Fuse" }),
    ];
    if add_space_prefix {
        decoders.push(json!({ "type": "Strip", "content": " ", "start": 1, "stop": 0 }));
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": { "type": "Sequence", "normalizers": normalizers },
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": { "type": "Sequence", "decoders": decoders },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": true,
            "byte_fallback": true,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    })
}
