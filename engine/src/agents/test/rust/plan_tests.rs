//! Module-level selection on a real workspace written by the test, with real git commits:
//! `corelib` (modules `math`, `text`), `app` (uses `corelib::text`, has a binary and an
//! integration test), `e2e` (only runs `app`'s binary, with a dev-dependency saying so) and
//! `other`, alone.

use std::path::Path;
use std::process::Command;

use super::{Change, changes};
use crate::agents::test::{Selection, select_rust_changes};

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t.invalid")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn write(dir: &Path, path: &str, text: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn manifest(name: &str, extra: &str) -> String {
    format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n{extra}")
}

const TEXT: &str = "pub fn shout(s: &str) -> String {\n    s.to_uppercase()\n}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn shouts() {\n        assert_eq!(shout(\"a\"), \"A\");\n    }\n}\n";

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    git(root, &["init", "--quiet", "--initial-branch=main"]);
    write(
        root,
        "Cargo.toml",
        "[workspace]\nmembers = [\"corelib\", \"app\", \"e2e\", \"other\"]\nresolver = \"2\"\n",
    );
    write(root, "README.md", "# fixture\n");
    write(root, "corelib/Cargo.toml", &manifest("corelib", ""));
    write(
        root,
        "corelib/src/lib.rs",
        "//! Core.\npub mod math;\npub mod text;\npub use math::double;\n",
    );
    write(
        root,
        "corelib/src/math.rs",
        "pub fn double(x: i32) -> i32 {\n    x * 2\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn doubles() {\n        assert_eq!(super::double(2), 4);\n    }\n}\n",
    );
    write(root, "corelib/src/text.rs", TEXT);
    write(root, "corelib/tests/data.txt", "fixture data\n");
    write(
        root,
        "app/Cargo.toml",
        &manifest(
            "app",
            "[dependencies]\ncorelib = { path = \"../corelib\" }\n",
        ),
    );
    write(root, "app/src/lib.rs", "pub mod report;\n");
    write(
        root,
        "app/src/report.rs",
        "use corelib::text::shout;\n\npub fn title(s: &str) -> String {\n    shout(s)\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn titles() {\n        assert_eq!(super::title(\"x\"), \"X\");\n    }\n}\n",
    );
    write(
        root,
        "app/src/main.rs",
        "fn main() {\n    println!(\"{}\", app::report::title(\"hi\"));\n}\n",
    );
    write(
        root,
        "app/tests/it.rs",
        "#[test]\nfn title_is_loud() {\n    assert_eq!(app::report::title(\"a\"), \"A\");\n}\n",
    );
    write(
        root,
        "e2e/Cargo.toml",
        &manifest("e2e", "[dev-dependencies]\napp = { path = \"../app\" }\n"),
    );
    write(root, "e2e/src/lib.rs", "//! Runs the app binary.\n");
    write(
        root,
        "e2e/tests/run.rs",
        "#[test]\nfn runs() {\n    let _ = std::process::Command::new(\"app\");\n}\n",
    );
    write(root, "other/Cargo.toml", &manifest("other", ""));
    write(
        root,
        "other/src/lib.rs",
        "#[cfg(test)]\nmod tests {\n    #[test]\n    fn alone() {}\n}\n",
    );
    git(root, &["add", "-A"]);
    git(root, &["commit", "--quiet", "-m", "workspace"]);
    dir
}

/// Commits `edits` and returns the selection for that commit.
fn commit(dir: &Path, edits: &[(&str, &str)]) -> Selection {
    for (path, text) in edits {
        write(dir, path, text);
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", "change"]);
    let sha = git(dir, &["rev-parse", "HEAD"]);
    let changed: Vec<Change> = changes(dir, &sha).expect("diff");
    select_rust_changes(dir, &changed).expect("selects")
}

fn units(selection: &Selection) -> Vec<String> {
    selection
        .units
        .iter()
        .map(|u| format!("{} {} [{}]", u.package, u.target, u.filters.join(" ")))
        .collect()
}

#[test]
fn a_module_change_selects_the_modules_and_targets_that_reach_it() {
    let dir = workspace();
    let root = dir.path();

    // Only `math` changed: its tests, not `text`'s, not `app` (which uses only `text`).
    let selection = commit(
        root,
        &[(
            "corelib/src/math.rs",
            "pub fn double(x: i32) -> i32 {\n    x + x\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn doubles() {\n        assert_eq!(super::double(2), 4);\n    }\n}\n",
        )],
    );
    assert!(!selection.all);
    assert_eq!(
        units(&selection),
        ["corelib lib [math::tests::]"],
        "{:#?}",
        selection.reasons
    );
    assert!(selection.selected_units < selection.total_units);

    // A change inside `text`'s test module selects that module only.
    let with_test = TEXT.replace("    }\n}\n", "    }\n\n    #[test]\n    fn empty() {\n        assert_eq!(shout(\"\"), \"\");\n    }\n}\n");
    let selection = commit(root, &[("corelib/src/text.rs", &with_test)]);
    assert_eq!(
        units(&selection),
        ["corelib lib [text::tests::]"],
        "{:#?}",
        selection.reasons
    );

    // `text` itself: its tests, app's module using it, app's integration test, and e2e, which
    // runs app's binary (main.rs reaches `report`, which reaches `text`).
    let selection = commit(
        root,
        &[(
            "corelib/src/text.rs",
            &with_test.replace("s.to_uppercase()", "s.to_ascii_uppercase()"),
        )],
    );
    assert_eq!(
        units(&selection),
        [
            "app lib [report::tests::]",
            "app test:it []",
            "corelib lib [text::tests::]",
            "e2e test:run []"
        ],
        "{:#?}",
        selection.reasons
    );
    assert!(
        selection
            .reasons
            .iter()
            .any(|r| r.starts_with("e2e test:run") && r.contains("bin app")),
        "{:#?}",
        selection.reasons
    );
    assert!(selection.covers("app", "test:it", "title_is_loud"));
    assert!(!selection.covers("other", "lib", "tests::alone"));
}

#[test]
fn what_the_module_graph_cannot_place_falls_back() {
    let dir = workspace();
    let root = dir.path();

    assert!(
        commit(root, &[("README.md", "# fixture\n\nmore\n")]).nothing(),
        "docs select nothing"
    );

    // A data file no module includes: its package and every dependent, at the crate level.
    let selection = commit(root, &[("corelib/tests/data.txt", "other data\n")]);
    assert_eq!(
        units(&selection),
        ["app * []", "corelib * []", "e2e * []"],
        "{:#?}",
        selection.reasons
    );

    // `include!` makes the package's modules untrusted: crate level again.
    let selection = commit(
        root,
        &[
            (
                "other/src/lib.rs",
                "include!(\"gen.rs\");\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn alone() {}\n}\n",
            ),
            ("other/src/gen.rs", "pub fn generated() {}\n"),
        ],
    );
    assert_eq!(
        units(&selection),
        ["other * []"],
        "{:#?}",
        selection.reasons
    );
    assert!(
        selection.reasons[0].contains("include!"),
        "{:#?}",
        selection.reasons
    );

    // An unparsable file: the crate level, with the parser's reason.
    let selection = commit(
        root,
        &[("corelib/src/math.rs", "pub fn double(x: i32 -> i32 {\n")],
    );
    assert_eq!(
        units(&selection),
        ["app * []", "corelib * []", "e2e * []"],
        "{:#?}",
        selection.reasons
    );
    assert!(
        selection.reasons.iter().any(|r| r.contains("unparsable")),
        "{:#?}",
        selection.reasons
    );

    // A member's manifest whose dependencies did not change (a comment): that member and its
    // dependents at the crate level (`manifest.rs`; dependency changes select everything).
    let selection = commit(
        root,
        &[(
            "app/Cargo.toml",
            &manifest(
                "app",
                "[dependencies]\ncorelib = { path = \"../corelib\" }\n# note\n",
            ),
        )],
    );
    assert!(!selection.all, "{:#?}", selection.reasons);
    assert_eq!(
        selection.packages,
        ["app", "e2e"],
        "{:#?}",
        selection.reasons
    );
}

#[test]
fn a_file_outside_every_package_selects_integration_tests_and_the_modules_naming_it() {
    let dir = workspace();
    let root = dir.path();
    // `math` reads a script by name at run time; nothing else names it.
    let math = "pub fn double(x: i32) -> i32 {\n    x * 2\n}\n\npub fn script() -> &'static str {\n    \"scripts/setup.sh\"\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn doubles() {\n        assert_eq!(super::double(2), 4);\n    }\n}\n";
    commit(
        root,
        &[
            ("corelib/src/math.rs", math),
            ("scripts/setup.sh", "echo one\n"),
            (".ci/run", "echo ci\n"),
        ],
    );

    let selection = commit(root, &[("scripts/setup.sh", "echo two\n")]);
    assert!(!selection.all, "{:#?}", selection.reasons);
    assert_eq!(
        units(&selection),
        [
            "app test:it []",
            "corelib lib [math::tests::]",
            "e2e test:run []"
        ],
        "{:#?}",
        selection.reasons
    );
    assert!(!selection.covers("corelib", "lib", "text::tests::shouts"));

    // CI configuration no module names: the integration tests only.
    let selection = commit(root, &[(".ci/run", "echo ci two\n")]);
    assert_eq!(
        units(&selection),
        ["app test:it []", "e2e test:run []"],
        "{:#?}",
        selection.reasons
    );
}

#[test]
fn crate_root_re_exports_and_comment_only_changes_do_not_reach_everything() {
    let dir = workspace();
    let root = dir.path();
    // The crate root re-exports both modules; each integration test names one item through it.
    commit(
        root,
        &[
            (
                "corelib/src/lib.rs",
                "//! Core.\npub mod math;\npub mod text;\npub use math::double;\npub use text::shout;\n",
            ),
            (
                "corelib/tests/api.rs",
                "#[test]\nfn doubles() {\n    assert_eq!(corelib::double(2), 4);\n}\n",
            ),
            (
                "corelib/tests/loud.rs",
                "use corelib::shout;\n\n#[test]\nfn shouts() {\n    assert_eq!(shout(\"a\"), \"A\");\n}\n",
            ),
        ],
    );
    let selection = commit(
        root,
        &[(
            "corelib/src/math.rs",
            "pub fn double(x: i32) -> i32 {\n    x + x\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn doubles() {\n        assert_eq!(super::double(2), 4);\n    }\n}\n",
        )],
    );
    assert_eq!(
        units(&selection),
        ["corelib lib [math::tests::]", "corelib test:api []"],
        "the re-export leads `api` to math, and `loud` only to text: {:#?}",
        selection.reasons
    );
    let selection = commit(
        root,
        &[(
            "corelib/src/text.rs",
            &TEXT.replace("s.to_uppercase()", "s.to_ascii_uppercase()"),
        )],
    );
    assert!(
        selection.covers("corelib", "test:loud", "shouts")
            && !selection.covers("corelib", "test:api", "doubles"),
        "{:#?}",
        selection.reasons
    );
    // Comments and formatting compile to the same tokens: nothing to select.
    let selection = commit(
        root,
        &[(
            "corelib/src/math.rs",
            "// Doubling.\npub fn double(x: i32) -> i32 {\n    // twice\n    x   +   x\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn doubles() {\n        assert_eq!(super::double(2), 4);\n    }\n}\n",
        )],
    );
    assert!(selection.nothing(), "{:#?}", selection.reasons);
    // A glob import of the crate root (as `http`'s integration tests write `use http::*`)
    // reaches whatever the root re-exports.
    commit(
        root,
        &[(
            "corelib/tests/glob.rs",
            "use corelib::*;\n\n#[test]\nfn doubles() {\n    assert_eq!(double(2), 4);\n}\n",
        )],
    );
    let selection = commit(
        root,
        &[(
            "corelib/src/math.rs",
            "pub fn double(x: i32) -> i32 {\n    2 * x\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn doubles() {\n        assert_eq!(super::double(2), 4);\n    }\n}\n",
        )],
    );
    assert!(
        selection.covers("corelib", "test:glob", "doubles")
            && !selection.covers("corelib", "test:loud", "shouts"),
        "{:#?}",
        selection.reasons
    );
}

#[test]
fn a_traits_module_reaches_impls_for_foreign_types_but_not_for_the_crates_own_types() {
    // As in `similar`: a trait (`show`), a module implementing it for its own struct (`pair`,
    // as a test's recording hook does), one implementing it for `bool` (`flags`), and `text`,
    // generic over the trait.
    let dir = workspace();
    let root = dir.path();
    let pair = |body: &str| {
        format!(
            "use crate::show::Show;\n\npub struct Pair(pub i32, pub i32);\n\nimpl Show for Pair {{\n    fn show(&self) -> String {{\n        {body}\n    }}\n}}\n\n#[cfg(test)]\nmod tests {{\n    use super::*;\n\n    #[test]\n    fn shows() {{\n        assert_eq!(Pair(1, 2).show(), \"1,2\");\n    }}\n}}\n"
        )
    };
    let flags = |body: &str| {
        format!(
            "impl crate::show::Show for bool {{\n    fn show(&self) -> String {{\n        {body}\n    }}\n}}\n\n#[cfg(test)]\nmod tests {{\n    use crate::show::Show;\n\n    #[test]\n    fn shows() {{\n        assert_eq!(true.show(), \"yes\");\n    }}\n}}\n"
        )
    };
    commit(
        root,
        &[
            (
                "corelib/src/lib.rs",
                "//! Core.\npub mod flags;\npub mod math;\npub mod pair;\npub mod show;\npub mod text;\npub use math::double;\n",
            ),
            (
                "corelib/src/show.rs",
                "pub trait Show {\n    fn show(&self) -> String;\n}\n",
            ),
            ("corelib/src/pair.rs", &pair("format!(\"{},{}\", self.0, self.1)")),
            (
                "corelib/src/flags.rs",
                &flags("if *self { \"yes\".into() } else { \"no\".into() }"),
            ),
            (
                "corelib/src/text.rs",
                &TEXT.replace(
                    "#[cfg(test)]",
                    "pub fn loud<T: crate::show::Show>(t: &T) -> String {\n    shout(&t.show())\n}\n\n#[cfg(test)]",
                ),
            ),
        ],
    );
    // Only a `Pair` runs `Pair`'s impl, and only `pair` makes one.
    let selection = commit(
        root,
        &[(
            "corelib/src/pair.rs",
            &pair("format!(\"{};{}\", self.0, self.1)"),
        )],
    );
    assert!(
        selection.covers("corelib", "lib", "pair::tests::shows")
            && !selection.covers("corelib", "lib", "text::tests::shouts")
            && !selection.covers("corelib", "lib", "flags::tests::shows"),
        "{:#?}",
        selection.reasons
    );
    // Any code holding a `bool` can run `bool`'s impl: whatever uses the trait is reached.
    let selection = commit(
        root,
        &[(
            "corelib/src/flags.rs",
            &flags("if *self { \"YES\".into() } else { \"no\".into() }"),
        )],
    );
    assert!(
        selection.covers("corelib", "lib", "flags::tests::shows")
            && selection.covers("corelib", "lib", "text::tests::shouts"),
        "{:#?}",
        selection.reasons
    );
}

#[test]
fn files_beside_a_root_package_sources_are_outside_its_build_unless_a_build_script_reads_them() {
    // One crate at the repository root (the usual shape of a published library): it owns
    // every path, yet its CI workflow and scripts compile into nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    git(root, &["init", "--quiet", "--initial-branch=main"]);
    commit(
        root,
        &[
            ("Cargo.toml", &manifest("solo", "")),
            (
                "src/lib.rs",
                &format!("pub mod text;\n\n{}", "pub fn one() -> i32 {\n    1\n}\n"),
            ),
            ("src/text.rs", TEXT),
            (
                "tests/api.rs",
                "#[test]\nfn one() {\n    assert_eq!(solo::one(), 1);\n}\n",
            ),
            (".github/workflows/ci.yml", "on: push\n"),
            ("scripts/bench.sh", "echo one\n"),
        ],
    );

    // A CI workflow no test names selects nothing.
    let selection = commit(root, &[(".github/workflows/ci.yml", "on: [push]\n")]);
    assert!(!selection.all, "{:#?}", selection.reasons);
    assert!(units(&selection).is_empty(), "{:#?}", selection.reasons);

    // A script may be run by an integration test: those, not everything.
    let selection = commit(root, &[("scripts/bench.sh", "echo two\n")]);
    assert!(!selection.all, "{:#?}", selection.reasons);
    assert_eq!(
        units(&selection),
        ["solo test:api []"],
        "{:#?}",
        selection.reasons
    );

    // With a build script any file of the package may feed the build: everything.
    commit(root, &[("build.rs", "fn main() {}\n")]);
    let selection = commit(root, &[("scripts/bench.sh", "echo three\n")]);
    assert!(selection.all, "{:#?}", selection.reasons);
}

fn lock(foo: &str, bar: &str) -> String {
    let entry = |name: &str, version: &str, dependencies: &[&str], registry: bool| {
        let source = if registry {
            "source = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"00\"\n"
        } else {
            ""
        };
        let dependencies = if dependencies.is_empty() {
            String::new()
        } else {
            format!(
                "dependencies = [\n{}]\n",
                dependencies
                    .iter()
                    .map(|d| format!(" \"{d}\",\n"))
                    .collect::<String>()
            )
        };
        format!("[[package]]\nname = \"{name}\"\nversion = \"{version}\"\n{source}{dependencies}\n")
    };
    [
        "version = 4\n\n".to_string(),
        entry("app", "0.1.0", &["corelib"], false),
        entry("bar", bar, &[], true),
        entry("corelib", "0.1.0", &["foo"], false),
        entry("e2e", "0.1.0", &["app"], false),
        entry("foo", foo, &[], true),
        entry("other", "0.1.0", &["bar"], false),
    ]
    .concat()
}

fn packages(selection: &Selection) -> Vec<String> {
    assert!(!selection.all, "{:#?}", selection.reasons);
    selection.packages.clone()
}

#[test]
fn a_lockfile_manifest_or_build_script_selects_the_members_it_touches() {
    let dir = workspace();
    let root = dir.path();
    commit(root, &[("Cargo.lock", &lock("1.0.0", "1.0.0"))]);

    // A dependency bump reaches the members depending on it, directly or not; not all.
    let selection = commit(root, &[("Cargo.lock", &lock("1.0.0", "1.0.1"))]);
    assert_eq!(packages(&selection), ["other"]);
    assert!(
        selection.reasons.iter().any(|r| r.contains("bar 1.0.0")),
        "{:#?}",
        selection.reasons
    );
    let selection = commit(root, &[("Cargo.lock", &lock("1.1.0", "1.0.1"))]);
    assert_eq!(packages(&selection), ["app", "corelib", "e2e"]);

    // A member's version bump: it and its dependents, at the crate level.
    let selection = commit(
        root,
        &[(
            "corelib/Cargo.toml",
            &manifest("corelib", "").replace("0.1.0", "0.1.1"),
        )],
    );
    assert_eq!(packages(&selection), ["app", "corelib", "e2e"]);
    assert!(
        selection.units.iter().all(|u| u.target == "*"),
        "{:#?}",
        selection.units
    );

    // A member's build script: that member (no dependents here).
    let selection = commit(root, &[("other/build.rs", "fn main() {}\n")]);
    assert_eq!(packages(&selection), ["other"]);

    // A new dependency may move resolution and features for every member; the workspace
    // manifest and an unparsable lockfile too: everything.
    let selection = commit(
        root,
        &[(
            "other/Cargo.toml",
            &manifest("other", "[dependencies]\nlibc = \"0.2\"\n"),
        )],
    );
    assert!(selection.all, "{:#?}", selection.reasons);
    let selection = commit(
        root,
        &[(
            "Cargo.toml",
            "[workspace]\nmembers = [\"corelib\", \"app\", \"e2e\", \"other\"]\nresolver = \"2\"\n\n[profile.dev]\nopt-level = 1\n",
        )],
    );
    assert!(selection.all, "{:#?}", selection.reasons);
    let selection = commit(root, &[("Cargo.lock", "version = 4\npackage = 3\n")]);
    assert!(selection.all, "{:#?}", selection.reasons);
    assert!(
        selection.reasons[0].contains("`package` is not an array"),
        "{:#?}",
        selection.reasons
    );
}
