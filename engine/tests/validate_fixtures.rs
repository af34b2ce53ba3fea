//! Snapshot tests for workflow validation messages, driven by the files in `fixtures/`.
//!
//! - `fixtures/invalid/NAME.yaml` must fail to load, and the full error text (every
//!   diagnostic, one per line, the file shown as `NAME.yaml`) must equal `NAME.expected`.
//! - `fixtures/valid/*.yaml` and the repository's `workflows/*.yaml` must load.
//! - No input makes the loader panic: every prefix of the valid files is loaded too.
//!
//! After changing a message on purpose, rewrite the snapshots with
//! `CAIRN_BLESS=1 cargo test -p cairn-engine --test validate_fixtures` and review the diff.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use cairn_engine::pipeline::{LoadOptions, load_str};

/// The agents that exist today; fixtures are written against this set.
const KNOWN_AGENTS: &[&str] = &[
    "orchestrator",
    "noop",
    "test_agent",
    "build_agent",
    "deploy_agent",
    "monitor_agent",
];
/// Fewer fixtures than this means the directory was not found or was emptied by mistake.
const MIN_INVALID_FIXTURES: usize = 30;

fn options() -> LoadOptions<'static> {
    LoadOptions {
        known_agents: KNOWN_AGENTS,
        check_with: None,
    }
}

fn fixtures(directory: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(directory)
}

/// The `.yaml` files of `directory`, sorted so failures are listed in a stable order.
fn yaml_files(directory: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", directory.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("failed to read a directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("fixture paths have a file name")
        .to_string_lossy()
        .into_owned()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()))
}

fn blessing() -> bool {
    std::env::var("CAIRN_BLESS").is_ok_and(|value| value == "1")
}

#[test]
fn invalid_fixtures_fail_with_the_expected_messages() {
    let files = yaml_files(&fixtures("invalid"));
    assert!(
        files.len() >= MIN_INVALID_FIXTURES,
        "expected at least {MIN_INVALID_FIXTURES} invalid fixtures, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let name = file_name(path);
        let actual = match load_str(&name, &read(path), &options()) {
            Ok(_) => {
                failures.push(format!("{name}: loaded, but it must be rejected"));
                continue;
            }
            Err(error) => format!("{error}\n"),
        };
        let expected_path = path.with_extension("expected");
        if blessing() {
            fs::write(&expected_path, &actual).unwrap_or_else(|error| {
                panic!("failed to write {}: {error}", expected_path.display())
            });
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{name}:\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) differ (rerun with CAIRN_BLESS=1 to accept the new messages):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_expected_file_has_a_fixture() {
    let directory = fixtures("invalid");
    for entry in fs::read_dir(&directory).expect("the invalid fixtures directory exists") {
        let path = entry.expect("failed to read a directory entry").path();
        if path
            .extension()
            .is_some_and(|extension| extension == "expected")
        {
            assert!(
                path.with_extension("yaml").exists(),
                "{} has no .yaml beside it",
                path.display()
            );
        }
    }
}

fn assert_loads(path: &Path) {
    let name = file_name(path);
    if let Err(error) = load_str(&name, &read(path), &options()) {
        panic!("{} must be valid, but:\n{error}", path.display());
    }
}

#[test]
fn valid_fixtures_load() {
    let files = yaml_files(&fixtures("valid"));
    assert!(!files.is_empty(), "no valid fixtures found");
    files.iter().for_each(|path| assert_loads(path));
}

fn repository_workflows() -> Vec<PathBuf> {
    yaml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows"))
}

#[test]
fn repository_workflows_load() {
    let files = repository_workflows();
    assert!(
        files
            .iter()
            .any(|path| file_name(path) == "ai-pipeline.yaml"),
        "workflows/ai-pipeline.yaml is missing"
    );
    files.iter().for_each(|path| assert_loads(path));
}

/// Loads `text`, turning a panic into a message naming the input.
fn load_without_panic(what: &str, text: &str) -> Option<String> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = load_str("truncated.yaml", text, &options());
    }));
    result
        .err()
        .map(|_| format!("{what} panicked; input:\n{text}"))
}

#[test]
fn truncated_and_damaged_workflows_never_panic() {
    let mut files = yaml_files(&fixtures("valid"));
    files.extend(repository_workflows());
    let mut panics = Vec::new();
    for path in &files {
        let text = read(path);
        let name = file_name(path);
        for (cut, _) in text.char_indices().chain([(text.len(), ' ')]) {
            panics.extend(load_without_panic(
                &format!("{name} cut at byte {cut}"),
                &text[..cut],
            ));
        }
        // Dropping any one line breaks indentation, lists and mappings in every way at once.
        let lines: Vec<&str> = text.lines().collect();
        for dropped in 0..lines.len() {
            let damaged: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|(index, _)| *index != dropped)
                .map(|(_, line)| *line)
                .collect();
            panics.extend(load_without_panic(
                &format!("{name} without line {}", dropped + 1),
                &damaged.join("\n"),
            ));
        }
    }
    assert!(panics.is_empty(), "{}", panics.join("\n\n"));
}

#[test]
fn yaml_punctuation_anywhere_never_panics() {
    // The characters YAML gives meaning to, inserted all over the default pipeline.
    const INSERTED: &[&str] = &[
        ":", "- ", "[", "]", "{", "}", "\"", "'", "&a ", "*a", "!t ", "|", ">", "\t", "#", "%",
        "@", "`", "? ", "---\n", "...\n", "\n", " ",
    ];
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/ai-pipeline.yaml");
    let text = read(&path);
    let mut panics = Vec::new();
    // Token boundaries only (start, after a blank or a colon): every other position only
    // repeats one of these cases inside a word, and the test must stay fast on two cores.
    let boundaries = text.char_indices().filter(|&(position, _)| {
        text[..position]
            .chars()
            .next_back()
            .is_none_or(|before| before.is_whitespace() || before == ':')
    });
    for (position, _) in boundaries {
        for inserted in INSERTED {
            let damaged = format!("{}{inserted}{}", &text[..position], &text[position..]);
            panics.extend(load_without_panic(
                &format!("ai-pipeline.yaml with {inserted:?} at byte {position}"),
                &damaged,
            ));
        }
    }
    assert!(panics.is_empty(), "{}", panics.join("\n\n"));
}
