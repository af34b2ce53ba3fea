//! The air-gap bundle end to end: `cairn bundle` packs the real binary, the configured model,
//! the templates and a SHA-256 manifest; unpacked into a clean directory, the bundle's own
//! `bin/cairn doctor` checks the machine and every file and passes; a damaged model is named.

use std::path::Path;
use std::process::Command;

use cairn_tests::Sandbox;

fn doctor(binary: &Path, home: &Path) -> (Option<i32>, String) {
    let output = Command::new(binary)
        .arg("doctor")
        .env("CAIRN_HOME", home)
        .env_remove("CAIRN_SANDBOX")
        .env_remove("CAIRN_MODEL")
        .env_remove("CAIRN_CONFIG")
        .output()
        .expect("run the bundled cairn");
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn a_bundle_unpacks_into_a_clean_directory_and_the_doctor_passes() {
    let sandbox = Sandbox::new();
    // The configured model: any GGUF file (here a small one: the bundle copies bytes).
    let model = sandbox.path("tiny-model.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend((0..4096u32).map(|n| (n % 251) as u8));
    std::fs::write(&model, &bytes).expect("model");
    std::fs::create_dir_all(sandbox.home()).expect("home");
    std::fs::write(
        sandbox.home().join("cairn.yaml"),
        format!("llm:\n  local:\n    model: {}\n", model.display()),
    )
    .expect("config");

    let tar = sandbox.path("cairn-bundle.tar");
    let made = sandbox.cairn_within(
        &["bundle", "--out", tar.to_str().expect("utf-8 path")],
        std::time::Duration::from_secs(300),
    );
    assert_eq!(made.code, Some(0), "{made}");
    assert!(tar.is_file());

    let clean = sandbox.path("target-machine");
    std::fs::create_dir_all(&clean).expect("clean dir");
    let unpacked = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&clean)
        .status()
        .expect("tar");
    assert!(unpacked.success());
    let root = clean.join("cairn-bundle");
    for file in [
        "bin/cairn",
        "models/tiny-model.gguf",
        "templates/github-cairn-risk.yml",
        "templates/gitea-cairn-risk.yml",
        "workflows/ai-pipeline.yaml",
        "INSTALL.md",
        "MANIFEST.sha256",
    ] {
        assert!(root.join(file).is_file(), "{file} is not in the bundle");
    }
    assert_eq!(
        std::fs::read(root.join("models/tiny-model.gguf")).expect("model"),
        bytes
    );
    let verified = Command::new("sha256sum")
        .args(["--check", "--quiet", "MANIFEST.sha256"])
        .current_dir(&root)
        .status()
        .expect("sha256sum");
    assert!(
        verified.success(),
        "sha256sum -c disagrees with the manifest"
    );

    let home = clean.join("home");
    let (code, said) = doctor(&root.join("bin/cairn"), &home);
    assert_eq!(code, Some(0), "{said}");
    for expected in [
        "ok      cpu",
        "ok      disk",
        "ok      model",
        "ok      bundle    6 files match",
    ] {
        assert!(said.contains(expected), "missing {expected:?} in:\n{said}");
    }

    // A damaged model is named, and the doctor fails.
    let mut damaged = bytes.clone();
    damaged[100] ^= 0xff;
    std::fs::write(root.join("models/tiny-model.gguf"), damaged).expect("damage");
    let (code, said) = doctor(&root.join("bin/cairn"), &home);
    assert_eq!(code, Some(3), "{said}");
    assert!(
        said.contains("models/tiny-model.gguf differs from what was packed"),
        "{said}"
    );
}
