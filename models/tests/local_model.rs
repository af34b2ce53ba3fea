//! The real default model end to end: loading and identity, chat, streaming, stop sequences,
//! seeded sampling, sharing across threads, and summaries of a real `git diff` (fitting the
//! context, and map-reduce when it does not).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cairn_models::{
    ChatMessage, ChatTemplateKind, FinishReason, GenerateParams, LanguageModel, LoadOptions,
    LoadProgress, LoadStage, LocalModel,
};

fn load(options: LoadOptions) -> LocalModel {
    LocalModel::load(&common::model_path(), options, &mut |_| {}).unwrap()
}

#[test]
fn loads_the_default_model_with_progress_and_identity() {
    let _serial = common::serial();
    let mut stages: Vec<LoadProgress> = Vec::new();
    let options = LoadOptions {
        threads: Some(2),
        hash_file: true,
        ..LoadOptions::default()
    };
    let model = LocalModel::load(&common::model_path(), options, &mut |p| stages.push(p)).unwrap();
    assert_eq!(stages.first().unwrap().stage, LoadStage::ReadingHeader);
    assert_eq!(stages.last().unwrap().stage, LoadStage::Ready);
    assert!(
        stages
            .iter()
            .any(|p| p.stage == LoadStage::Weights && p.done == 30 && p.total == 30)
    );
    let id = model.identity();
    assert_eq!(id.architecture, "llama");
    assert_eq!(id.file_name, cairn_models::DEFAULT_MODEL_FILE);
    assert_eq!(
        id.sha256.as_deref(),
        Some(cairn_models::DEFAULT_MODEL_SHA256)
    );
    assert_eq!(id.context_length, 8192);
    assert_eq!(id.chat_template, ChatTemplateKind::ChatMl);
    assert_eq!(model.threads(), 2);
    assert_eq!(model.count_tokens("Hello world, fix teh typo!").unwrap(), 9);
}

#[test]
fn chat_streams_stops_and_samples_reproducibly() {
    let _serial = common::serial();
    let model: Arc<dyn LanguageModel> = Arc::new(load(LoadOptions::default()));
    let question = [
        ChatMessage::system("You are a helpful assistant."),
        ChatMessage::user("What is the capital of France?"),
    ];

    let mut streamed = String::new();
    let answer = model
        .chat(&question, &GenerateParams::default(), &mut |t| {
            streamed.push_str(t)
        })
        .unwrap();
    assert!(answer.text.contains("Paris"), "{answer:?}");
    assert_eq!(streamed, answer.text);
    assert_eq!(answer.finish_reason, FinishReason::EndOfText);
    assert_eq!(answer.completion_tokens, answer.token_ids.len());

    let stopped = model
        .chat(
            &question,
            &GenerateParams {
                stop: vec![" of".to_string()],
                ..GenerateParams::default()
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(stopped.text, "The capital");
    assert_eq!(stopped.finish_reason, FinishReason::StopSequence);

    let short = model
        .chat(
            &question,
            &GenerateParams {
                max_tokens: 3,
                ..GenerateParams::default()
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(short.completion_tokens, 3);
    assert_eq!(short.finish_reason, FinishReason::MaxTokens);

    let sampled = |seed| {
        let params = GenerateParams {
            temperature: 1.0,
            top_p: 0.9,
            top_k: 40,
            repetition_penalty: 1.1,
            seed,
            max_tokens: 24,
            ..GenerateParams::default()
        };
        model
            .chat(
                &[ChatMessage::user("Write a short poem about rust.")],
                &params,
                &mut |_| {},
            )
            .unwrap()
            .text
    };
    assert_eq!(sampled(11), sampled(11));
    assert_ne!(sampled(11), sampled(12));
}

#[test]
fn one_model_serves_several_threads() {
    let _serial = common::serial();
    let model: Arc<dyn LanguageModel> = Arc::new(load(LoadOptions::default()));
    let params = GenerateParams {
        max_tokens: 8,
        ..GenerateParams::default()
    };
    let expected = model
        .generate(
            "The three stages of a deployment pipeline are",
            &params,
            &mut |_| {},
        )
        .unwrap()
        .text;
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let model = model.clone();
            let params = params.clone();
            std::thread::spawn(move || {
                model
                    .generate(
                        "The three stages of a deployment pipeline are",
                        &params,
                        &mut |_| {},
                    )
                    .unwrap()
                    .text
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), expected);
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=Cairn Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A repository with two commits; returns `git diff HEAD~1`.
fn real_diff(dir: &Path, lines: usize) -> String {
    git(dir, &["init", "-q"]);
    let before: String = (0..lines)
        .map(|i| format!("    let value_{i} = {i};\n"))
        .collect();
    let write = |body: &str| {
        std::fs::write(
            dir.join("lib.rs"),
            format!("pub fn total() -> u32 {{\n{body}    0\n}}\n"),
        )
        .unwrap()
    };
    write(&before);
    std::fs::write(dir.join("README.md"), "This is teh shop service.\n").unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "initial"]);
    let after = before.replace("= ", "= 2 * ");
    write(&after);
    std::fs::write(dir.join("README.md"), "This is the shop service.\n").unwrap();
    git(dir, &["commit", "-q", "-am", "fix typo, double values"]);
    git(dir, &["diff", "HEAD~1"])
}

#[test]
fn summarizes_a_real_git_diff_in_one_sentence() {
    let _serial = common::serial();
    let model = load(LoadOptions::default());
    let repo = tempfile::tempdir().unwrap();
    let diff = real_diff(repo.path(), 3);
    assert!(diff.contains("+This is the shop service."));
    // The model tends to add a second sentence; the stop sequences end the answer after the
    // first one.
    let params = GenerateParams {
        max_tokens: 60,
        stop: vec![". ".to_string(), "\n".to_string()],
        ..GenerateParams::default()
    };
    let summary = model
        .summarize(&diff, "Summarize this git diff in one sentence.", &params)
        .unwrap();
    let text = summary.text.trim();
    eprintln!("summary: {text:?}");
    assert!(text.split_whitespace().count() >= 3, "{text:?}");
    assert!(!text.contains('\n') && !text.contains(". "), "{text:?}");
    assert!(!summary.input_summarized);
}

#[test]
fn input_longer_than_the_context_is_summarized_map_reduce() {
    let _serial = common::serial();
    let model = load(LoadOptions {
        context_length: Some(256),
        ..LoadOptions::default()
    });
    let repo = tempfile::tempdir().unwrap();
    let diff = real_diff(repo.path(), 20);
    let tokens = model.count_tokens(&diff).unwrap();
    assert!(tokens > 400, "diff has {tokens} tokens");
    let params = GenerateParams {
        max_tokens: 40,
        stop: vec!["\n".to_string()],
        ..GenerateParams::default()
    };
    let started = std::time::Instant::now();
    let summary = model
        .summarize(&diff, "Summarize this git diff in one sentence:", &params)
        .unwrap();
    eprintln!("map-reduce took {:?}", started.elapsed());
    eprintln!("map-reduce summary: {:?}", summary.text);
    assert!(summary.input_summarized);
    assert!(!summary.text.trim().is_empty());

    // chat() condenses an over-long conversation instead of cutting it.
    let long = [ChatMessage::user(format!("Explain this diff:\n{diff}"))];
    let started = std::time::Instant::now();
    let answer = model.chat(&long, &params, &mut |_| {}).unwrap();
    eprintln!("condensed chat took {:?}: {answer:?}", started.elapsed());
    assert!(answer.input_summarized);
    assert!(answer.prompt_tokens <= 256);

    // generate() on a raw prompt that cannot fit is a clear error.
    let err = model.generate(&diff, &params, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("context window"), "{err}");
}
