//! Builds a Hugging Face tokenizer from a GGUF file's `tokenizer.ggml.*` metadata, so one
//! `.gguf` file is all a model needs (see DESIGN.md, "Models"). The small parts (normalizer,
//! pre-tokenizer, decoder) are a `tokenizer.json` document; the vocabulary, the merges and the
//! added tokens — 150,000 entries each for Qwen — go to the tokenizer directly. (Writing them
//! into the document and parsing it back took ~0.35 s of Qwen's load.)
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
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::{AddedToken, Tokenizer};

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

/// Reads `tokenizer.ggml.*` and returns the tokenizer plus special ids.
pub(crate) fn tokenizer_from_gguf(gguf: &GgufFile) -> Result<(Tokenizer, SpecialIds), Error> {
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

    let added = added_tokens(&tokens, &types);
    let (document, merges) = match kind.as_str() {
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
            let merges = gguf
                .string_array("tokenizer.ggml.merges")?
                .into_iter()
                .map(|merge| match merge.split_once(' ') {
                    Some((left, right)) => Ok((left.to_string(), right.to_string())),
                    None => Err(tokenizer_error(&format!(
                        "merge `{merge}` is not two pieces separated by a space"
                    ))),
                })
                .collect::<Result<Merges, Error>>()?;
            (byte_level_document(row), merges)
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
            (
                sentencepiece_document(add_space_prefix, unk.as_deref()),
                merges,
            )
        }
        other => {
            return Err(tokenizer_error(&format!(
                "unsupported tokenizer.ggml.model `{other}` (supported: gpt2, llama)"
            )));
        }
    };
    let mut tokenizer: Tokenizer = document
        .to_string()
        .parse()
        .map_err(|err| tokenizer_error(&format!("{err}")))?;
    let model = &document["model"];
    let mut bpe = BPE::builder()
        .vocab_and_merges(vocab(&tokens), merges)
        .fuse_unk(model["fuse_unk"].as_bool().unwrap_or(false))
        .byte_fallback(model["byte_fallback"].as_bool().unwrap_or(false))
        .ignore_merges(model["ignore_merges"].as_bool().unwrap_or(false));
    if let Some(unk) = model["unk_token"].as_str() {
        bpe = bpe.unk_token(unk.to_string());
    }
    let bpe = bpe
        .build()
        .map_err(|err| tokenizer_error(&format!("{err}")))?;
    tokenizer.with_model(bpe);
    // Every added token is in the vocabulary, so each keeps its id.
    let (special, normal): (Vec<AddedToken>, Vec<AddedToken>) =
        added.into_iter().partition(|token| token.special);
    tokenizer
        .add_special_tokens(special)
        .map_err(|err| tokenizer_error(&format!("{err}")))?;
    tokenizer
        .add_tokens(normal)
        .map_err(|err| tokenizer_error(&format!("{err}")))?;
    Ok((tokenizer, specials))
}

fn tokenizer_error(reason: &str) -> Error {
    Error::Tokenizer {
        reason: reason.to_string(),
    }
}

/// Token string → id. A duplicated string keeps its first id (as llama.cpp does).
fn vocab(tokens: &[String]) -> Vocab {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        vocab.entry(token.clone()).or_insert(id as u32);
    }
    vocab
}

/// Control, user-defined and unknown tokens are matched whole in the input, before BPE.
fn added_tokens(tokens: &[String], types: &[i32]) -> Vec<AddedToken> {
    tokens
        .iter()
        .zip(types)
        .filter(|(token, kind)| {
            !token.is_empty()
                && matches!(
                    **kind,
                    TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED | TOKEN_TYPE_UNKNOWN
                )
        })
        .map(|(token, kind)| {
            AddedToken::from(token.clone(), *kind != TOKEN_TYPE_USER_DEFINED)
                .single_word(false)
                .lstrip(false)
                .rstrip(false)
                .normalized(false)
        })
        .collect()
}

/// The byte-level document; its model's vocabulary and merges are left empty.
fn byte_level_document(row: &PreTokenizer) -> Value {
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
        "added_tokens": [],
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
            "vocab": {},
            "merges": [],
        },
    })
}

/// Rebuilds BPE merges from SentencePiece scores: every split of a normal token into two
/// vocabulary pieces is a merge, ranked by the score of the whole token (highest first).
fn sentencepiece_merges(tokens: &[String], types: &[i32], scores: &[f32]) -> Merges {
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
        .map(|(_, _, l, r)| (tokens[l].clone(), tokens[r].clone()))
        .collect()
}

/// The SentencePiece document; its model's vocabulary and merges are left empty.
fn sentencepiece_document(add_space_prefix: bool, unk: Option<&str>) -> Value {
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
        "added_tokens": [],
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
            "vocab": {},
            "merges": [],
        },
    })
}
