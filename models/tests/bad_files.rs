//! Broken or unsupported model files give clear errors, never panics: an empty file, bad
//! magic, corrupt header counts, a truncated copy of the real model, and a well-formed GGUF of
//! an architecture Cairn cannot run.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;

use cairn_models::{Error, LoadOptions, LocalModel};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

fn load(path: &Path) -> Error {
    match LocalModel::load(path, LoadOptions::default(), &mut |_| {}) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(err) => err,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    path
}

#[test]
fn missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(&dir.path().join("absent.gguf"));
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("failed to read model file"),
        "{err}"
    );
}

#[test]
fn empty_and_garbage_files_are_invalid_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let mut corrupt_counts = b"GGUF".to_vec();
    corrupt_counts.extend_from_slice(&3u32.to_le_bytes());
    corrupt_counts.extend_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    corrupt_counts.extend_from_slice(&u64::MAX.to_le_bytes()); // metadata count
    let mut huge_string = b"GGUF".to_vec();
    huge_string.extend_from_slice(&3u32.to_le_bytes());
    huge_string.extend_from_slice(&0u64.to_le_bytes());
    huge_string.extend_from_slice(&1u64.to_le_bytes());
    huge_string.extend_from_slice(&(1u64 << 60).to_le_bytes()); // key length
    huge_string.extend_from_slice(&[0u8; 64]);
    let cases: [(&str, Vec<u8>); 5] = [
        ("empty.gguf", Vec::new()),
        ("bad-magic.gguf", b"NOTAGGUFFILE-0123456789abcdef".repeat(8)),
        ("zeros.gguf", vec![0u8; 4096]),
        ("corrupt-counts.gguf", corrupt_counts),
        ("huge-string.gguf", huge_string),
    ];
    for (name, bytes) in cases {
        let path = write(dir.path(), name, &bytes);
        let err = load(&path);
        assert!(matches!(err, Error::InvalidGguf { .. }), "{name}: {err:?}");
        assert!(
            err.to_string().starts_with("failed to parse GGUF file"),
            "{name}: {err}"
        );
        assert!(cairn_models::load_tokenizer(&path).is_err(), "{name}");
    }
}

#[test]
fn truncated_real_model_is_invalid_gguf() {
    let model = common::model_path();
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    std::fs::File::open(&model)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    for (name, len) in [
        ("header-only.gguf", 64),
        ("metadata-cut.gguf", 1 << 20),
        ("half.gguf", bytes.len() / 2),
        ("last-byte-missing.gguf", bytes.len() - 1),
    ] {
        let path = write(dir.path(), name, &bytes[..len]);
        let err = load(&path);
        assert!(matches!(err, Error::InvalidGguf { .. }), "{name}: {err:?}");
        eprintln!("{name}: {err}");
    }
}

fn synthetic_gguf(path: &Path, architecture: &str) {
    let tensor = QTensor::quantize(
        &Tensor::zeros((2, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let metadata = [
        (
            "general.architecture",
            Value::String(architecture.to_string()),
        ),
        ("general.name", Value::String("synthetic".to_string())),
    ];
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &metadata, &[("token_embd.weight", &tensor)]).unwrap();
}

#[test]
fn unsupported_architecture_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mamba.gguf");
    synthetic_gguf(&path, "mamba");
    let err = load(&path);
    match &err {
        Error::UnsupportedArchitecture { architecture, .. } => assert_eq!(architecture, "mamba"),
        other => panic!("expected UnsupportedArchitecture, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("unsupported architecture `mamba`"),
        "{message}"
    );
    assert!(
        message.contains("llama") && message.contains("qwen2"),
        "{message}"
    );
}

#[test]
fn supported_architecture_with_missing_metadata_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hollow-llama.gguf");
    synthetic_gguf(&path, "llama");
    let err = load(&path);
    assert!(err.to_string().starts_with("failed to"), "{err}");
}
