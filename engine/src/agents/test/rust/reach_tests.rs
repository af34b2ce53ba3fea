//! Tests of `reach.rs` on real git repositories: what each kind of change reaches.

#![allow(clippy::unwrap_used)] // In tests a panic is the failure report.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::reach::{Parsed, Reach, reach};

const LIB: &str = "\
//! A crate.

pub const LIMIT: usize = 3;
pub const DOUBLE: usize = LIMIT * 2;

#[derive(Debug, Clone)]
pub struct Header {
    pub name: String,
    pub size: usize,
}

impl Header {
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), size: 0 }
    }

    pub fn long(&self) -> bool {
        self.name.len() > DOUBLE
    }
}

macro_rules! twice {
    ($e:expr) => {
        $e * 2
    };
}

pub fn twice_of(n: usize) -> usize {
    twice!(n)
}

pub fn same() -> std::cmp::Ordering {
    std::cmp::Ordering::Equal
}

pub fn plain(n: usize) -> usize {
    // adds one
    n + 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_adds() {
        assert_eq!(super::plain(1), 2);
    }
}
";

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn commit(dir: &Path, files: &[(&str, &str)]) -> String {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", "change"]);
    git(dir, &["rev-parse", "HEAD"])
}

/// The reach of changing `src/lib.rs` from [`LIB`] to `new`, as `path key` strings.
fn reach_of(new: &str, extra: &[(&str, &str)]) -> Option<BTreeSet<String>> {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    let before = commit(
        dir.path(),
        &[
            ("Cargo.toml", "[package]\nname = \"c\"\n"),
            ("src/lib.rs", LIB),
        ],
    );
    let mut files = vec![("src/lib.rs", new)];
    files.extend_from_slice(extra);
    let after = commit(dir.path(), &files);
    let reached: Reach = reach(dir.path(), &before, &after, &mut Parsed::default())?;
    Some(
        reached
            .units
            .into_iter()
            .flat_map(|(path, keys)| keys.into_iter().map(move |k| format!("{path} {k}")))
            .collect(),
    )
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| format!("src/lib.rs {k}")).collect()
}

#[test]
fn a_body_change_reaches_its_function_alone() {
    let reached = reach_of(&LIB.replace("n + 1", "n + 2"), &[]).unwrap();
    assert_eq!(reached, set(&["plain"]));
}

#[test]
fn comments_reach_nothing() {
    let new = LIB
        .replace("// adds one", "// adds one, always")
        .replace("//! A crate.", "//! A small crate.");
    assert_eq!(reach_of(&new, &[]).unwrap(), BTreeSet::new());
}

#[test]
fn a_field_reaches_what_names_its_type_or_the_field() {
    let new = LIB.replace("pub size: usize,", "pub size: u64,");
    let reached = reach_of(&new, &[]).unwrap();
    // The struct (its derives), the impl's methods (they are `Self`), not the rest.
    assert_eq!(
        reached,
        set(&[
            "struct Header",
            "impl Header",
            "Header::new",
            "Header::long"
        ])
    );
}

#[test]
fn a_constant_reaches_through_the_constants_computed_from_it() {
    let reached = reach_of(&LIB.replace("LIMIT: usize = 3", "LIMIT: usize = 4"), &[]).unwrap();
    assert_eq!(
        reached,
        set(&["const LIMIT", "const DOUBLE", "Header::long"])
    );
}

#[test]
fn a_macro_reaches_its_callers() {
    let reached = reach_of(&LIB.replace("$e * 2", "$e + $e"), &[]).unwrap();
    assert_eq!(reached, set(&["macro twice", "twice_of"]));
}

#[test]
fn a_new_method_reaches_what_calls_a_method_of_its_name() {
    let new = LIB.replace(
        "    pub fn long(&self)",
        "    pub fn len(&self) -> usize {\n        1\n    }\n\n    pub fn cmp(&self) -> bool {\n        true\n    }\n\n    pub fn long(&self)",
    );
    let reached = reach_of(&new, &[]).unwrap();
    // `self.name.len()` in `long` might now resolve to the new method.
    assert!(reached.contains("src/lib.rs Header::long"), "{reached:?}");
    assert!(!reached.contains("src/lib.rs plain"), "{reached:?}");
    // `cmp` in `std::cmp::Ordering` is a module, never a call of the new `cmp`.
    assert!(!reached.contains("src/lib.rs same"), "{reached:?}");
}

#[test]
fn an_impl_header_reaches_everything_inside() {
    let new = LIB.replace("impl Header {", "impl Header where Header: Clone {");
    let reached = reach_of(&new, &[]).unwrap();
    assert!(reached.is_superset(&set(&["impl Header", "Header::new", "Header::long"])));
    assert!(!reached.contains("src/lib.rs plain"), "{reached:?}");
}

#[test]
fn what_cannot_be_told_is_none() {
    // A manifest (beyond its version), a build script, an inner attribute outside every item.
    assert_eq!(
        reach_of(
            LIB,
            &[(
                "Cargo.toml",
                "[package]\nname = \"c\"\nedition = \"2021\"\n"
            )]
        ),
        None
    );
    assert_eq!(reach_of(LIB, &[("build.rs", "fn main() {}\n")]), None);
    assert_eq!(reach_of(&format!("#![allow(dead_code)]\n{LIB}"), &[]), None);
}

#[test]
fn tests_reading_sources_are_reached_by_any_change() {
    let ui = "#[test]\nfn ui() {\n    let t = trybuild::TestCases::new();\n    t.compile_fail(\"tests/ui/*.rs\");\n}\n";
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    let before = commit(
        dir.path(),
        &[
            ("src/lib.rs", LIB),
            ("tests/ui.rs", ui),
            ("tests/ui/broken.rs", "fn main( {\n"),
        ],
    );
    let after = commit(
        dir.path(),
        &[("src/lib.rs", &LIB.replace("n + 1", "n + 2"))],
    );
    let reached = reach(dir.path(), &before, &after, &mut Parsed::default())
        .unwrap()
        .units;
    assert!(reached["tests/ui.rs"].contains("ui"), "{reached:?}");
    assert!(!reached.contains_key("tests/ui/broken.rs"), "{reached:?}");
}

#[test]
fn documentation_reaches_only_what_ran_its_item() {
    let new = LIB.replace(
        "#[derive(Debug, Clone)]\npub struct Header",
        "/// A header.\n#[derive(Debug, Clone)]\npub struct Header",
    );
    assert_eq!(reach_of(&new, &[]).unwrap(), set(&["struct Header"]));
}

#[test]
fn a_private_field_reaches_only_its_module() {
    let inner = "pub struct Cache {\n    hits: u32,\n}\n\nimpl Cache {\n    pub fn hits(&self) -> u32 {\n        self.hits\n    }\n}\n";
    let other = "pub struct Stats {\n    pub hits: u64,\n}\n\npub fn count(s: &Stats) -> u64 {\n    s.hits\n}\n";
    let lib = format!("{LIB}\nmod inner;\nmod other;\n");
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    let before = commit(
        dir.path(),
        &[
            ("src/lib.rs", &lib),
            ("src/inner.rs", inner),
            ("src/other.rs", other),
        ],
    );
    let after = commit(
        dir.path(),
        &[("src/inner.rs", &inner.replace("hits: u32", "hits: u64"))],
    );
    let reached = reach(dir.path(), &before, &after, &mut Parsed::default())
        .unwrap()
        .units;
    assert!(
        reached["src/inner.rs"].contains("Cache::hits"),
        "{reached:?}"
    );
    assert!(!reached.contains_key("src/other.rs"), "{reached:?}");
}

#[test]
fn a_release_reaches_what_reads_the_version_and_the_documents() {
    let lib = format!(
        "{LIB}\npub fn version() -> &'static str {{\n    env!(\"CARGO_PKG_VERSION\")\n}}\n\n\
         pub fn readme() -> String {{\n    std::fs::read_to_string(\"README.md\").unwrap_or_default()\n}}\n"
    );
    let manifest = |v: &str| format!("[package]\nname = \"c\"\nversion = \"{v}\"\n");
    let lock = |v: &str| format!("version = 4\n\n[[package]]\nname = \"c\"\nversion = \"{v}\"\n");
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    let before = commit(
        dir.path(),
        &[
            ("Cargo.toml", &manifest("1.0.0")),
            ("Cargo.lock", &lock("1.0.0")),
            ("CHANGELOG.md", "# 1.0.0\n"),
            ("src/lib.rs", &lib),
        ],
    );
    let bump = commit(
        dir.path(),
        &[
            ("Cargo.toml", &manifest("1.1.0")),
            ("Cargo.lock", &lock("1.1.0")),
        ],
    );
    let reached = reach(dir.path(), &before, &bump, &mut Parsed::default())
        .unwrap()
        .units;
    assert_eq!(
        reached["src/lib.rs"],
        BTreeSet::from(["version".to_string()])
    );
    // `cargo metadata` may have rewritten the lockfile as a build would: not this change.
    git(dir.path(), &["checkout", "--", "."]);
    let notes = commit(dir.path(), &[("CHANGELOG.md", "# 1.1.0\n\n# 1.0.0\n")]);
    let reached = reach(dir.path(), &bump, &notes, &mut Parsed::default())
        .unwrap()
        .units;
    assert_eq!(
        reached["src/lib.rs"],
        BTreeSet::from(["readme".to_string()])
    );
    // A dependency added is not a release: it cannot be told.
    let added = commit(
        dir.path(),
        &[(
            "Cargo.toml",
            &format!("{}\n[dependencies]\nitoa = \"1\"\n", manifest("1.1.0")),
        )],
    );
    assert_eq!(
        reach(dir.path(), &notes, &added, &mut Parsed::default()),
        None
    );
    // With a build script, neither can.
    let built = commit(dir.path(), &[("build.rs", "fn main() {}\n")]);
    let again = commit(dir.path(), &[("Cargo.toml", &manifest("1.2.0"))]);
    assert_eq!(
        reach(dir.path(), &built, &again, &mut Parsed::default()),
        None
    );
}

#[test]
fn comment_like_lines_inside_a_string_are_code() {
    let lib = format!("{LIB}\npub const HELP: &str = \"usage:\n// one\n/// two\n\";\n");
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    let before = commit(dir.path(), &[("src/lib.rs", &lib)]);
    let after = commit(
        dir.path(),
        &[(
            "src/lib.rs",
            &lib.replace("// one", "// uno")
                .replace("/// two", "/// dos"),
        )],
    );
    let reached = reach(dir.path(), &before, &after, &mut Parsed::default())
        .unwrap()
        .units;
    assert!(reached["src/lib.rs"].contains("const HELP"), "{reached:?}");
}
