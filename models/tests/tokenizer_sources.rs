//! Tokenizer sources other than the default model's byte-level BPE metadata: a
//! `tokenizer.json` next to the model wins over the metadata, and SentencePiece-style
//! (`tokenizer.ggml.model = llama`) vocabularies are rebuilt from their scores.

#![allow(clippy::unwrap_used)]

mod common;

use cairn_models::TokenizerSource;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

#[test]
fn tokenizer_json_next_to_the_model_is_preferred() {
    let model = common::model_path();
    let from_metadata = cairn_models::load_tokenizer(&model).unwrap();
    assert_eq!(from_metadata.source(), &TokenizerSource::GgufMetadata);

    let dir = tempfile::tempdir().unwrap();
    let linked = dir.path().join("model.gguf");
    std::os::unix::fs::symlink(&model, &linked).unwrap();
    let sidecar = dir.path().join("tokenizer.json");
    std::fs::write(&sidecar, from_metadata.to_tokenizer_json()).unwrap();
    let from_file = cairn_models::load_tokenizer(&linked).unwrap();
    assert_eq!(from_file.source(), &TokenizerSource::File(sidecar.clone()));
    let text = "<|im_start|>user\nSummarize this change.<|im_end|>\n";
    assert_eq!(
        from_file.encode(text).unwrap(),
        from_metadata.encode(text).unwrap()
    );

    std::fs::write(&sidecar, "{ not json").unwrap();
    let err = cairn_models::load_tokenizer(&linked).err().unwrap();
    assert!(
        err.to_string().starts_with("failed to build the tokenizer"),
        "{err}"
    );
}

fn strings(values: &[&str]) -> Value {
    Value::Array(
        values
            .iter()
            .map(|s| Value::String(s.to_string()))
            .collect(),
    )
}

#[test]
fn sentencepiece_vocabulary_from_scores() {
    // A toy SentencePiece vocabulary: control tokens, byte fallback for every byte, pieces
    // whose scores rank the merges (▁h + ello beats ▁ + hello).
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types: Vec<i32> = vec![2, 3, 3];
    for byte in 0..=255u8 {
        tokens.push(format!("<0x{byte:02X}>"));
        types.push(6);
    }
    let pieces = [
        ("\u{2581}", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("w", -2.0),
        ("r", -2.0),
        ("d", -2.0),
        ("ll", -3.0),
        ("llo", -4.0),
        ("ello", -5.0),
        ("\u{2581}h", -6.0),
        ("\u{2581}hello", -7.0),
        ("\u{2581}w", -8.0),
    ];
    let mut scores: Vec<f32> = vec![0.0; tokens.len()];
    for (piece, score) in pieces {
        tokens.push(piece.to_string());
        types.push(1);
        scores.push(score);
    }
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let metadata = [
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&token_refs)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.iter().map(|t| Value::I32(*t)).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(scores.iter().map(|s| Value::F32(*s)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ];
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor = QTensor::quantize(
        &Tensor::zeros((2, 32), DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spm.gguf");
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut file, &metadata, &[("token_embd.weight", &tensor)]).unwrap();
    drop(file);

    let tokenizer = cairn_models::load_tokenizer(&path).unwrap();
    let id = |piece: &str| tokenizer.token_id(piece).unwrap();
    assert_eq!(
        tokenizer.encode("hello").unwrap(),
        vec![id("\u{2581}hello")]
    );
    let ids = tokenizer.encode("hello world").unwrap();
    assert_eq!(&ids[..2], &[id("\u{2581}hello"), id("\u{2581}w")]);
    // "!" is not a piece: byte fallback.
    let bang = tokenizer.encode("hello!").unwrap();
    assert_eq!(bang, vec![id("\u{2581}hello"), id("<0x21>")]);
    for text in ["hello world", "hello!", " hello", "hello  w"] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(tokenizer.decode(&ids).unwrap(), text, "{ids:?}");
    }
    // Special tokens are single ids; like llama.cpp and Hugging Face's (legacy) Llama
    // tokenizer, the text after one gets its own "▁" prefix.
    assert_eq!(tokenizer.encode("</s>").unwrap(), vec![2]);
    assert_eq!(
        tokenizer.encode("</s>hello").unwrap(),
        vec![2, id("\u{2581}hello")]
    );
}
