//! The project's own hygiene, as CI sees it: the CI script checks formatting and lints, and a
//! clone of the repository alone has everything its tests read (no file outside the checkout).

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
        .to_path_buf()
}

#[test]
fn ci_checks_formatting_and_lints_before_testing() {
    let root = workspace_root();
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect("read .ci/run");
    assert!(
        ci.contains("scripts/test.sh"),
        ".ci/run must run scripts/test.sh:\n{ci}"
    );
    let script = std::fs::read_to_string(root.join("scripts/test.sh")).expect("read test.sh");
    let commands: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .collect();
    let position = |wanted: &str| commands.iter().position(|line| line.starts_with(wanted));
    let fmt = position("cargo fmt --all --check").expect("test.sh runs `cargo fmt --all --check`");
    let clippy = position("cargo clippy --workspace --all-targets -- -D warnings")
        .expect("test.sh runs clippy over every target with warnings as errors");
    let test = position("cargo test --workspace").expect("test.sh runs the test suite");
    assert!(
        fmt < test && clippy < test,
        "format and lint checks run before the tests"
    );
}

/// Every Rust file under `dir`, skipping build output.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn tests_read_nothing_outside_the_repository() {
    let root = workspace_root();
    let mut files = Vec::new();
    for crate_dir in ["engine", "models", "tests"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    // Relative paths in string literals (`include_str!`, joins onto the manifest directory)
    // that leave the workspace whichever base they are read from, and the old shared vectors.
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let crate_dir = ["engine", "models", "tests"]
            .iter()
            .map(|name| root.join(name))
            .find(|dir| file.starts_with(dir))
            .expect("every file is in a crate");
        for (number, line) in text.lines().enumerate() {
            let escapes = line.split('"').skip(1).step_by(2).any(|literal| {
                literal.starts_with("../")
                    && [file.parent().unwrap_or(&root), crate_dir.as_path()]
                        .iter()
                        .all(|base| !normalize(&base.join(literal)).starts_with(&root))
            });
            if escapes || line.contains(concat!("shared", "/vectors")) {
                offenders.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "files read outside the repository:\n{}",
        offenders.join("\n")
    );
    let vectors = root.join("models/tests/vectors/smollm2-135m-instruct-q4_1.json");
    let text = std::fs::read_to_string(&vectors)
        .expect("the model's reference vectors are in the repository");
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("vectors are JSON");
    assert!(
        parsed["greedy"]
            .as_array()
            .is_some_and(|cases| !cases.is_empty())
    );
}

/// `path` with `..` and `.` resolved lexically (the files need not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::CurDir => {}
            other => parts.push(other),
        }
    }
    parts.iter().collect()
}
