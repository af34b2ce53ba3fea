//! `cairn model info|tokenize|generate` on the real default model, checked against llama.cpp's
//! reference vectors (models/tests/vectors), and the same commands on files that are not
//! models: a clear error naming the file, exit 2.

use std::path::PathBuf;

use cairn_tests::Sandbox;

const EXIT_INVALID: i32 = 2;

fn vectors() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/vectors/smollm2-135m-instruct-q4_1.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}

/// The real default model (the test's own environment, not the sandbox's empty home).
fn model() -> String {
    cairn_models::default_model_path()
        .unwrap_or_else(|err| panic!("{err}\n(run scripts/fetch-model.sh first)"))
        .display()
        .to_string()
}

fn json(output: &cairn_tests::Output) -> serde_json::Value {
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|err| panic!("stdout is not JSON ({err})\n{output}"))
}

#[test]
fn info_reads_the_header_and_says_the_model_is_supported() {
    let sandbox = Sandbox::new();
    let info = sandbox.cairn(&["model", "info", "--json", &model()]);
    assert_eq!(info.code, Some(0), "{info}");
    let info = json(&info);
    assert_eq!(info["architecture"], "llama");
    assert_eq!(info["supported"], true);
    // SmolLM2-135M: ~135 M weights in 272 tensors, 30 layers, 576 wide, 49152 tokens.
    let parameters = info["parameters"].as_u64().expect("parameters");
    assert!((130_000_000..140_000_000).contains(&parameters), "{info}");
    assert_eq!(info["layers"], 30);
    assert_eq!(info["embedding_length"], 576);
    assert_eq!(info["vocab_size"], 49152);
    assert!(
        info["formats"]["Q4_1"]["tensors"].as_u64().unwrap_or(0) > 100,
        "{info}"
    );

    let text = sandbox.cairn(&["model", "info", &model()]);
    assert_eq!(text.code, Some(0), "{text}");
    assert!(text.stdout.contains("llama (supported)"), "{text}");
    assert!(text.stdout.contains("30 layers, width 576"), "{text}");
}

#[test]
fn tokenize_gives_llama_cpps_ids() {
    let sandbox = Sandbox::new();
    let vectors = vectors();
    for case in vectors["tokenizer"]
        .as_array()
        .expect("cases")
        .iter()
        .take(4)
    {
        let text = case["text"].as_str().expect("text");
        let output = sandbox.cairn(&["model", "tokenize", "--json", "--model", &model(), text]);
        assert_eq!(output.code, Some(0), "{output}");
        let ids: Vec<u64> = json(&output)
            .as_array()
            .expect("array")
            .iter()
            .map(|t| t["id"].as_u64().expect("id"))
            .collect();
        let expected: Vec<u64> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id"))
            .collect();
        assert_eq!(ids, expected, "{text:?}");
    }
}

#[test]
fn generate_continues_greedily_as_llama_cpp_does_and_reports_speed() {
    let sandbox = Sandbox::new();
    let vectors = vectors();
    let case = &vectors["greedy"][0];
    let prompt = case["prompt"].as_str().expect("prompt");
    let model = model();
    let output = sandbox.cairn(&[
        "model",
        "generate",
        "--json",
        "--max-tokens",
        "12",
        "--model",
        &model,
        prompt,
    ]);
    assert_eq!(output.code, Some(0), "{output}");
    let report = json(&output);
    assert_eq!(report["text"], case["text"], "{output}");
    assert_eq!(report["finish_reason"], "end_of_text", "{output}");
    assert!(
        report["tokens_per_second"].as_f64().unwrap_or(0.0) > 0.0,
        "{output}"
    );

    // Streamed as text, with the speed on stderr.
    let output = sandbox.cairn(&[
        "model",
        "generate",
        "--max-tokens",
        "12",
        "--model",
        &model,
        prompt,
    ]);
    assert_eq!(output.code, Some(0), "{output}");
    assert!(output.stdout.contains("Paris"), "{output}");
    assert!(output.stderr.contains("tokens/s"), "{output}");
}

#[test]
fn files_that_are_not_models_are_named_and_exit_2() {
    let sandbox = Sandbox::new();
    let not_gguf = sandbox.write("notes.gguf", "this is not a model\n");
    let missing = sandbox.path("missing.gguf");
    for (args, expect) in [
        (vec!["model", "info"], "not"),
        (vec!["model", "tokenize", "--model"], "not"),
    ] {
        for (file, says) in [(&not_gguf, expect), (&missing, "no such model file")] {
            let mut args = args.clone();
            let file = file.display().to_string();
            args.push(&file);
            if args[1] == "tokenize" {
                args.push("hello");
            }
            let output = sandbox.cairn(&args);
            assert_eq!(
                output.code,
                Some(EXIT_INVALID),
                "{}\n{output}",
                args.join(" ")
            );
            assert!(output.stderr.contains(&file), "names the file\n{output}");
            assert!(output.stderr.contains(says), "{output}");
            assert!(!output.stderr.contains("panicked"), "{output}");
        }
    }
}
