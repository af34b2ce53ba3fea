//! Shared helpers for the integration tests: the real default model and the reference vectors.

#![allow(dead_code)]

use std::path::PathBuf;

/// The real default model; fails with a hint to run the fetch script when it is missing.
pub fn model_path() -> PathBuf {
    match cairn_models::default_model_path() {
        Ok(path) => path,
        Err(err) => panic!("{err}\n(run scripts/fetch-model.sh before the model tests)"),
    }
}

/// The reference vectors produced with llama.cpp (`tests/vectors/`, kept in the repository so
/// a clone alone passes its tests).
pub fn vectors() -> serde_json::Value {
    vectors_file("smollm2-135m-instruct-q4_1.json")
}

/// The vectors file `name` of `tests/vectors/`.
pub fn vectors_file(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()));
    serde_json::from_str(&text).expect("vectors file is valid JSON")
}

pub fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .expect("ids array")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

/// Serializes the tests that run the model: candle's decode threads spin while waiting for
/// work, so two models generating at once on a small machine slow each other down many
/// times over.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
