//! The orchestrator's rule floor on the kinds of commits found in real histories that it once
//! misjudged: a dependency bump under `requirements/`, a merge of a docs branch, a path with
//! `authority` in it, a release that only bumps the version, comment-only edits, deleted doc
//! images, code files whose names look like docs, and a commented-out login check.
//!
//! Each case is a real commit in a real git repository the test builds, analysed by
//! `orchestrator::analyze` as `cairn analyze --no-model` does. See `ARCHITECTURE.md`, "Risk and
//! routing".

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_engine::agents::orchestrator::{Analysis, Level, analyze};

struct Repo {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let repo = Repo {
            path: dir.path().to_path_buf(),
            _dir: dir,
        };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.git(&["config", "user.name", "Cairn Tests"]);
        repo.git(&["config", "user.email", "tests@cairn.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(args)
            .current_dir(&self.path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn write(&self, path: &str, text: impl AsRef<[u8]>) {
        let full = self.path.join(path);
        std::fs::create_dir_all(full.parent().expect("a parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path.join(path)).expect("read")
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn analyze(&self, commit: &str) -> Analysis {
        analyze(Path::new(&self.path), commit).expect("the commit analyses")
    }
}

fn categories(analysis: &Analysis) -> Vec<&'static str> {
    analysis
        .change
        .categories
        .iter()
        .map(|c| c.as_str())
        .collect()
}

fn rules(analysis: &Analysis) -> Vec<&'static str> {
    analysis.risk.reasons.iter().map(|r| r.rule).collect()
}

/// A small Python web service with docs, a Rust crate beside it, and pinned requirements.
fn base(repo: &Repo) {
    repo.write("README.md", "# Shop\n\nAn online shop.\n");
    repo.write(
        "docs/guide.md",
        "# Guide\n\nStart the server with `make run`.\n",
    );
    repo.write(
        "docs/img/flow.png",
        b"\x89PNG\r\n\x1a\n\0\x01\x02\x03binary",
    );
    repo.write(
        "requirements/base.txt",
        "asyncpg==0.28.0\nstarlette==0.36.3\n",
    );
    repo.write(
        "shop/views.py",
        "from django.contrib.auth.decorators import login_required\n\n\n@login_required\ndef export_orders(request):\n    \"\"\"Exports the user's orders as CSV.\"\"\"\n    rows = request.user.orders.all()\n    return render_csv(rows)\n",
    );
    repo.write(
        "shop/certificate_authority.py",
        "def issuer_name(cert):\n    return cert.issuer.rfc4514_string()\n",
    );
    repo.write(
        "Cargo.toml",
        "[package]\nname = \"shop-cli\"\nversion = \"0.3.0\"\nedition = \"2021\"\n\n[dependencies]\nserde = \"1\"\n",
    );
    repo.write(
        "Cargo.lock",
        "version = 3\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.200\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"aaaa\"\n\n[[package]]\nname = \"shop-cli\"\nversion = \"0.3.0\"\ndependencies = [\n \"serde\",\n]\n",
    );
    repo.write(
        "src/lib.rs",
        "/// Formats a price in cents as euros.\npub fn euros(cents: u64) -> String {\n    format!(\"{}.{:02} EUR\", cents / 100, cents % 100)\n}\n",
    );
    repo.write("CHANGELOG.md", "# Changes\n\n## 0.3.0\n\n- CSV export.\n");
    repo.commit("base");
}

#[test]
fn a_requirements_bump_is_a_dependency_change_never_docs() {
    let repo = Repo::new();
    base(&repo);
    let text = repo
        .read("requirements/base.txt")
        .replace("0.28.0", "0.29.0");
    repo.write("requirements/base.txt", text);
    let analysis = repo.analyze(&repo.commit("Bump asyncpg from 0.28.0 to 0.29.0"));
    assert_eq!(categories(&analysis), ["dependencies"], "{analysis:#?}");
    assert!(!analysis.change.only_docs);
    assert_eq!(analysis.risk.level, Level::High, "{analysis:#?}");
    assert_ne!(analysis.route.tests, "skip");
}

#[test]
fn a_merge_is_diffed_against_its_first_parent_only() {
    let repo = Repo::new();
    base(&repo);
    repo.git(&["checkout", "--quiet", "-b", "docs-branch"]);
    let guide = repo.read("docs/guide.md") + "\nStop it with Ctrl-C.\n";
    repo.write("docs/guide.md", guide);
    repo.commit("docs: how to stop");
    repo.git(&["checkout", "--quiet", "main"]);
    let views = repo
        .read("shop/views.py")
        .replace("render_csv(rows)", "render_csv(list(rows))");
    repo.write("shop/views.py", views);
    repo.commit("views: materialise rows");
    repo.git(&[
        "merge",
        "--quiet",
        "--no-ff",
        "-m",
        "Merge docs-branch",
        "docs-branch",
    ]);
    let analysis = repo.analyze("HEAD");
    let paths: Vec<&str> = analysis
        .files
        .iter()
        .map(|f| f.file.path.as_str())
        .collect();
    assert_eq!(paths, ["docs/guide.md"], "{analysis:#?}");
    assert!(analysis.change.only_docs);
    assert_eq!(analysis.risk.level, Level::Low, "{analysis:#?}");
}

#[test]
fn auth_inside_authority_is_not_security() {
    let repo = Repo::new();
    base(&repo);
    let text = repo
        .read("shop/certificate_authority.py")
        .replace("rfc4514_string()", "rfc4514_string().strip()");
    repo.write("shop/certificate_authority.py", text);
    let analysis = repo.analyze(&repo.commit("strip issuer names"));
    assert_eq!(categories(&analysis), ["code"], "{analysis:#?}");
    assert_eq!(analysis.risk.level, Level::Medium);
}

#[test]
fn a_release_that_only_bumps_the_version_is_not_a_dependency_change() {
    let repo = Repo::new();
    base(&repo);
    let manifest = repo
        .read("Cargo.toml")
        .replace("version = \"0.3.0\"", "version = \"0.4.0\"");
    let lock = repo.read("Cargo.lock").replace(
        "name = \"shop-cli\"\nversion = \"0.3.0\"",
        "name = \"shop-cli\"\nversion = \"0.4.0\"",
    );
    let changelog = repo
        .read("CHANGELOG.md")
        .replace("## 0.3.0", "## 0.4.0\n\n- Faster.\n\n## 0.3.0");
    repo.write("Cargo.toml", manifest);
    repo.write("Cargo.lock", lock);
    repo.write("CHANGELOG.md", changelog);
    let analysis = repo.analyze(&repo.commit("Release 0.4.0"));
    assert_eq!(categories(&analysis), ["docs", "release"], "{analysis:#?}");
    assert!(!rules(&analysis).contains(&"dependencies"));
    assert_eq!(analysis.risk.level, Level::Low, "{analysis:#?}");

    // The same files with a dependency bump beside the version stay a dependency change.
    let manifest = repo
        .read("Cargo.toml")
        .replace("0.4.0", "0.5.0")
        .replace("serde = \"1\"", "serde = \"1.0.210\"");
    repo.write("Cargo.toml", manifest);
    let analysis = repo.analyze(&repo.commit("Release 0.5.0 with serde 1.0.210"));
    assert_eq!(categories(&analysis), ["dependencies"], "{analysis:#?}");
    assert_eq!(analysis.risk.level, Level::High);
}

#[test]
fn comment_only_changes_in_code_are_low_and_code_changes_are_not() {
    let repo = Repo::new();
    base(&repo);
    let lib = repo
        .read("src/lib.rs")
        .replace("as euros.", "as euros, with two decimals.");
    let views = repo
        .read("shop/views.py")
        .replace("as CSV.", "as a CSV file.");
    repo.write("src/lib.rs", lib);
    repo.write("shop/views.py", views);
    let analysis = repo.analyze(&repo.commit("docs: clarify doc comments"));
    assert_eq!(categories(&analysis), ["comments"], "{analysis:#?}");
    assert!(analysis.change.only_docs);
    assert_eq!(analysis.risk.level, Level::Low, "{analysis:#?}");

    // A trailing comment added to a code line is still only a comment…
    let lib = repo
        .read("src/lib.rs")
        .replace("cents % 100)", "cents % 100) // two digits");
    repo.write("src/lib.rs", lib);
    let analysis = repo.analyze(&repo.commit("a comment at the end of a code line"));
    assert_eq!(categories(&analysis), ["comments"], "{analysis:#?}");
    // …but a changed value beside an unchanged comment is code.
    let lib = repo.read("src/lib.rs").replace("EUR\"", "€\"");
    repo.write("src/lib.rs", lib);
    let analysis = repo.analyze(&repo.commit("euro sign"));
    assert_eq!(categories(&analysis), ["code"], "{analysis:#?}");
    assert_eq!(analysis.risk.level, Level::Medium);
}

#[test]
fn deleting_images_under_docs_is_docs() {
    let repo = Repo::new();
    base(&repo);
    repo.git(&["rm", "--quiet", "docs/img/flow.png"]);
    let analysis = repo.analyze(&repo.commit("docs: drop the old diagram"));
    assert_eq!(categories(&analysis), ["docs"], "{analysis:#?}");
    assert_eq!(analysis.risk.level, Level::Low);
}

#[test]
fn file_names_cannot_make_code_look_like_docs() {
    let repo = Repo::new();
    base(&repo);
    repo.write(
        "license_check.go",
        "package main\n\nfunc licenseOK(key string) bool {\n\treturn len(key) == 32\n}\n",
    );
    repo.write(
        "src/api/doc/views.py",
        "import os\n\n\ndef render(name):\n    os.system(\"pandoc \" + name)\n",
    );
    repo.write(
        "src/shop/readme_auth.py",
        "def can_read(user):\n    return user.is_staff\n",
    );
    let analysis = repo.analyze(&repo.commit("docs: readme tweaks"));
    assert!(!analysis.change.only_docs, "{analysis:#?}");
    assert!(!analysis.risk.certain);
    assert!(!categories(&analysis).contains(&"docs"), "{analysis:#?}");
    assert!(categories(&analysis).contains(&"security"));
    assert_eq!(analysis.risk.level, Level::High, "{analysis:#?}");
}

#[test]
fn a_commented_out_login_check_raises_the_floor_and_names_the_line() {
    let repo = Repo::new();
    base(&repo);
    let views = repo
        .read("shop/views.py")
        .replace("@login_required\n", "# @login_required\n");
    repo.write("shop/views.py", views);
    let analysis = repo.analyze(&repo.commit("temporarily open the export"));
    assert_eq!(analysis.risk.level, Level::High, "{analysis:#?}");
    let reason = analysis
        .risk
        .reasons
        .iter()
        .find(|r| r.rule == "auth_check_removed")
        .unwrap_or_else(|| panic!("no auth_check_removed reason: {analysis:#?}"));
    assert!(
        reason.detail.contains("shop/views.py:4") && reason.detail.contains("@login_required"),
        "{}",
        reason.detail
    );
    assert!(reason.detail.contains("commented out"), "{}", reason.detail);
}
