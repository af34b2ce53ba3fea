//! `cairn tests measure` on a tiny Go module the test writes (real git commits, real `go
//! test`): a change in one package selects that package's tests and the importers', not the
//! unrelated package's; the fault planted in the changed function panics, which ends its
//! package's test binary at the first test, yet every test revealing it is found (the package
//! runs again with its unreported tests) and was selected.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

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
    let file = dir.join(path);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(file, text).expect("write");
}

const MATHX: &str =
    "package mathx\n\n// Double doubles.\nfunc Double(x int) int {\n\treturn x * 2\n}\n";
const MATHX_TEST: &str = "package mathx\n\nimport \"testing\"\n\nfunc TestDouble(t *testing.T) {\n\tif Double(2) != 4 {\n\t\tt.Fatal(\"double\")\n\t}\n}\n\nfunc TestQuadruple(t *testing.T) {\n\tif Double(Double(1)) != 4 {\n\t\tt.Fatal(\"quadruple\")\n\t}\n}\n";

#[test]
fn a_go_package_change_is_measured_with_every_revealing_test() {
    assert!(
        Command::new("go").arg("version").output().is_ok(),
        "go is not installed; scripts/setup.sh installs it (golang-go)"
    );
    let sandbox = tempfile::tempdir().expect("tempdir");
    let repo = sandbox.path().join("tiny");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    write(&repo, "go.mod", "module example.com/tiny\n\ngo 1.18\n");
    write(&repo, "mathx/mathx.go", MATHX);
    write(&repo, "mathx/mathx_test.go", MATHX_TEST);
    write(
        &repo,
        "area/area.go",
        "package area\n\nimport \"example.com/tiny/mathx\"\n\nfunc Square(side int) int {\n\treturn side * mathx.Double(side) / 2\n}\n",
    );
    write(
        &repo,
        "area/area_test.go",
        "package area\n\nimport \"testing\"\n\nfunc TestSquare(t *testing.T) {\n\tif Square(3) != 9 {\n\t\tt.Fatal(\"square\")\n\t}\n}\n",
    );
    write(
        &repo,
        "text/text.go",
        "package text\n\nimport \"strings\"\n\nfunc Shout(s string) string {\n\treturn strings.ToUpper(s)\n}\n",
    );
    write(
        &repo,
        "text/text_test.go",
        "package text\n\nimport \"testing\"\n\nfunc TestShout(t *testing.T) {\n\tif Shout(\"a\") != \"A\" {\n\t\tt.Fatal(\"shout\")\n\t}\n}\n",
    );
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "tiny module"]);
    write(&repo, "mathx/mathx.go", &MATHX.replace("x * 2", "x + x"));
    git(
        &repo,
        &["commit", "--quiet", "-am", "mathx: add instead of multiply"],
    );

    let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["tests", "measure", "--repo"])
        .arg(&repo)
        .args([
            "--commits",
            "1",
            "--json",
            "--command",
            "go test ./...",
            "--scratch",
        ])
        .arg(sandbox.path().join("scratch"))
        .env("CAIRN_HOME", sandbox.path().join("home"))
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .output()
        .expect("cairn runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let commit = &report["commits"][0];
    assert_eq!(
        commit["subject"], "mathx: add instead of multiply",
        "{commit:#}"
    );
    // mathx's two tests and its importer's one, not text's.
    assert_eq!(
        (commit["selected"].as_u64(), commit["total"].as_u64()),
        (Some(3), Some(4)),
        "{commit:#}"
    );
    assert_eq!(
        commit["mutants"],
        serde_json::json!(["mathx/mathx.go:4 Double"])
    );
    let mut revealing: Vec<&str> = commit["revealing"]
        .as_array()
        .expect("revealing")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    revealing.sort_unstable();
    assert_eq!(
        revealing,
        [
            "example.com/tiny/area::TestSquare",
            "example.com/tiny/mathx::TestDouble",
            "example.com/tiny/mathx::TestQuadruple"
        ],
        "the panic of TestDouble did not hide TestQuadruple: {commit:#}"
    );
    assert_eq!(commit["missed"], serde_json::json!([]));
    assert_eq!(report["summary"]["kept_percent"], 100.0);
    // The repository is untouched: no switch file, no mutant.
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
}
