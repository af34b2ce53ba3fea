//! A [`Workflow`] printed in Cairn's own YAML form (`cairn convert`): whatever form a file was
//! written in (the design brief's `pipeline:`, an Actions workflow), this is what Cairn runs.
//! Loading the text printed here gives back the same workflow (tested), so it can replace the
//! original file.

use std::fmt::Write as _;

use super::duration::format_duration;
use super::model::{
    Action, CommitSelection, Limit, Limits, ModelUse, Network, RetryPolicy, SandboxRequirement,
    Step, StepFiles, StepSandbox, Workflow,
};

/// The native YAML for `workflow`, with `notes` as comments at the top.
pub fn to_native_yaml(workflow: &Workflow, notes: &[String]) -> String {
    let mut out = String::new();
    for note in notes {
        let _ = writeln!(out, "# note: {note}");
    }
    let _ = writeln!(out, "name: {}", quote(&workflow.name));
    if let Some(description) = &workflow.description {
        let _ = writeln!(out, "description: {}", quote(description));
    }
    if let Some(concurrency) = workflow.concurrency {
        let _ = writeln!(out, "concurrency: {concurrency}");
    }
    if workflow.sandbox == SandboxRequirement::Required {
        out.push_str("sandbox: required\n");
    }
    if let Some(llm) = model_use(workflow.llm) {
        let _ = writeln!(out, "llm: {llm}");
    }
    write_env(&mut out, "", &workflow.env);
    if let Some(trigger) = &workflow.trigger {
        out.push_str("trigger:\n");
        if let Some(schedule) = &trigger.schedule {
            let _ = writeln!(out, "  schedule: {}", quote(schedule));
        }
        let commits = match trigger.commits {
            CommitSelection::Each => "each",
            CommitSelection::Latest => "latest",
        };
        let _ = writeln!(out, "  commits: {commits}");
        if !trigger.repositories.is_empty() {
            out.push_str("  repositories:\n");
            for repository in &trigger.repositories {
                let _ = writeln!(out, "    - url: {}", quote(&repository.url));
                if !repository.branches.is_empty() {
                    let branches: Vec<String> =
                        repository.branches.iter().map(|b| quote(b)).collect();
                    let _ = writeln!(out, "      branches: [{}]", branches.join(", "));
                }
            }
        }
    }
    out.push_str("steps:\n");
    for step in &workflow.steps {
        write_step(&mut out, step);
    }
    out
}

fn write_step(out: &mut String, step: &Step) {
    let _ = writeln!(out, "  - id: {}", step.id);
    if step.name != step.id {
        let _ = writeln!(out, "    name: {}", quote(&step.name));
    }
    match &step.action {
        Action::Run { command } => {
            let _ = writeln!(out, "    run: {}", text_value(command, "      "));
        }
        Action::Agent { name, with } => {
            let _ = writeln!(out, "    agent: {name}");
            let empty = with.as_object().is_none_or(|map| map.is_empty());
            if !empty {
                // JSON is YAML's flow syntax: quoted strings stay strings, numbers numbers.
                let _ = writeln!(out, "    with: {}", flow(with));
            }
        }
    }
    match step.depends_on.as_slice() {
        [] => {}
        [one] => {
            let _ = writeln!(out, "    depends_on: {one}");
        }
        many => {
            let _ = writeln!(out, "    depends_on: [{}]", many.join(", "));
        }
    }
    if let Some(timeout) = step.timeout {
        let _ = writeln!(out, "    timeout: {}", format_duration(timeout));
    }
    write_retries(out, &step.retry);
    if step.on_failure != Default::default() {
        let _ = writeln!(out, "    on_failure: {}", step.on_failure.as_str());
    }
    if let Some(when) = &step.when {
        let _ = writeln!(out, "    when: {}", quote(when.source()));
    }
    write_env(out, "    ", &step.env);
    if !step.secrets.is_empty() {
        if step.secrets.iter().all(|(variable, name)| variable == name) {
            let names: Vec<&str> = step.secrets.keys().map(String::as_str).collect();
            let _ = writeln!(out, "    secrets: [{}]", names.join(", "));
        } else {
            let pairs: Vec<String> = step
                .secrets
                .iter()
                .map(|(variable, name)| format!("{variable}: {name}"))
                .collect();
            let _ = writeln!(out, "    secrets: {{ {} }}", pairs.join(", "));
        }
    }
    write_sandbox(out, &step.sandbox);
    write_files(out, &step.sandbox.files);
    if let Some(llm) = model_use(step.llm) {
        let _ = writeln!(out, "    llm: {llm}");
    }
}

fn write_retries(out: &mut String, retry: &RetryPolicy) {
    let defaults = RetryPolicy::default();
    let Some(count) = retry.retries else {
        if retry.backoff == defaults.backoff && retry.max_backoff == defaults.max_backoff {
            return;
        }
        let _ = writeln!(
            out,
            "    retries: {{ backoff: {}, max_backoff: {} }}",
            format_duration(retry.backoff),
            format_duration(retry.max_backoff)
        );
        return;
    };
    if retry.backoff == defaults.backoff && retry.max_backoff == defaults.max_backoff {
        let _ = writeln!(out, "    retries: {count}");
    } else {
        let _ = writeln!(
            out,
            "    retries: {{ count: {count}, backoff: {}, max_backoff: {} }}",
            format_duration(retry.backoff),
            format_duration(retry.max_backoff)
        );
    }
}

fn write_env(out: &mut String, indent: &str, env: &std::collections::BTreeMap<String, String>) {
    if env.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}env:");
    for (key, value) in env {
        let _ = writeln!(out, "{indent}  {key}: {}", quote(value));
    }
}

fn quoted_list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let quoted: Vec<String> = items.map(|item| quote(item)).collect();
    format!("[{}]", quoted.join(", "))
}

fn write_files(out: &mut String, files: &StepFiles) {
    if !files.artifacts.is_empty() {
        let _ = writeln!(
            out,
            "    artifacts: {}",
            quoted_list(files.artifacts.iter())
        );
    }
    if let Some(cache) = &files.cache {
        let mut parts = vec![
            format!("key: {}", quote(&cache.key.source)),
            format!("paths: {}", quoted_list(cache.paths.iter())),
        ];
        if !cache.restore_keys.is_empty() {
            parts.push(format!(
                "restore_keys: {}",
                quoted_list(cache.restore_keys.iter().map(|key| &key.source))
            ));
        }
        let _ = writeln!(out, "    cache: {{ {} }}", parts.join(", "));
    }
}

fn write_sandbox(out: &mut String, sandbox: &StepSandbox) {
    let mut parts = Vec::new();
    let list = |paths: &[String]| {
        let quoted: Vec<String> = paths.iter().map(|p| quote(p)).collect();
        format!("[{}]", quoted.join(", "))
    };
    if !sandbox.read.is_empty() {
        parts.push(format!("read: {}", list(&sandbox.read)));
    }
    if !sandbox.write.is_empty() {
        parts.push(format!("write: {}", list(&sandbox.write)));
    }
    if sandbox.docker {
        parts.push("docker: true".to_owned());
    }
    if let Some(network) = sandbox.network {
        parts.push(format!(
            "network: {}",
            match network {
                Network::Host => "host",
                Network::None => "none",
            }
        ));
    }
    if !parts.is_empty() {
        let _ = writeln!(out, "    sandbox: {{ {} }}", parts.join(", "));
    }
    if sandbox.limits != Limits::default() {
        let limit = |limit: Limit| match limit.value() {
            None => "unlimited".to_owned(),
            Some(value) => value.to_string(),
        };
        let mut limits = Vec::new();
        let Limits {
            memory,
            processes,
            file_size,
        } = sandbox.limits;
        for (name, value) in [
            ("memory", memory),
            ("processes", processes),
            ("file_size", file_size),
        ] {
            if let Some(value) = value {
                limits.push(format!("{name}: {}", limit(value)));
            }
        }
        let _ = writeln!(out, "    limits: {{ {} }}", limits.join(", "));
    }
}

fn model_use(llm: ModelUse) -> Option<String> {
    let on = |value: bool| if value { "on" } else { "off" };
    let mut parts = Vec::new();
    if let Some(local) = llm.local {
        parts.push(format!("local: {}", on(local)));
    }
    if let Some(remote) = llm.remote {
        parts.push(format!("remote: {}", on(remote)));
    }
    (!parts.is_empty()).then(|| format!("{{ {} }}", parts.join(", ")))
}

/// JSON as a YAML flow value (`{ "key": value, … }`): quoted strings stay strings.
fn flow(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("{}: {}", quote(key), flow(value)))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// A double-quoted YAML scalar: JSON string syntax is valid YAML and escapes everything.
fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// A literal block (`|-`) for readable multi-line scripts when the text survives one exactly;
/// a quoted scalar otherwise.
fn text_value(text: &str, indent: &str) -> String {
    let block_safe = text.contains('\n')
        && !text.ends_with('\n')
        && !text.starts_with([' ', '\n', '\t'])
        && text
            .lines()
            .all(|line| !line.ends_with([' ', '\t']) && !line.contains('\r'))
        && !text.contains("\n\n\n");
    if !block_safe {
        return quote(text);
    }
    let mut block = String::from("|-");
    for line in text.split('\n') {
        block.push('\n');
        if !line.is_empty() {
            block.push_str(indent);
            block.push_str(line);
        }
    }
    block
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::super::load::{LoadOptions, load_str};
    use super::*;

    /// Locations differ between the two files; everything else must not.
    fn without_locations(mut workflow: Workflow) -> Workflow {
        for step in &mut workflow.steps {
            step.location = Default::default();
        }
        workflow
    }

    #[test]
    fn the_default_pipeline_round_trips() {
        let text = include_str!("../../../workflows/ai-pipeline.yaml");
        let workflow = load_str("a.yaml", text, &LoadOptions::default()).unwrap();
        let printed = to_native_yaml(&workflow, &[]);
        let again = load_str("b.yaml", &printed, &LoadOptions::default()).unwrap();
        assert_eq!(
            without_locations(workflow),
            without_locations(again),
            "{printed}"
        );
    }

    #[test]
    fn awkward_values_round_trip() {
        let text = "name: \"x: y\"\nenv: { A: \"it's \\\"quoted\\\"\", B: '' }\nsteps:\n  - id: a\n    run: \"  leading\\n\\ttab\\ntrailing \\n\"\n    retries: { count: 2, backoff: 3s, max_backoff: 1m }\n    on_failure: retry\n    sandbox: { read: [/srv], docker: true, network: none }\n    limits: { memory: 1GiB, processes: unlimited }\n    llm: { local: off }\n    env: { TOKEN: \"${{ secrets.API_TOKEN }}\" }\n    secrets: [OTHER]\n    artifacts: [./dist/, \"reports/*.xml\"]\n    cache: { key: \"deps-{{ hash 'Cargo.lock' }}\", paths: target, restore_keys: [deps-] }\n  - id: b\n    run: |-\n      echo one\n\n      echo two\n    depends_on: a\n    when: \"steps.a.outputs.x != 'y'\"\n";
        let workflow = load_str("a.yaml", text, &LoadOptions::default()).unwrap();
        let printed = to_native_yaml(&workflow, &["a note".to_owned()]);
        assert!(printed.starts_with("# note: a note\n"), "{printed}");
        let again = load_str("b.yaml", &printed, &LoadOptions::default()).unwrap();
        assert_eq!(
            without_locations(workflow),
            without_locations(again),
            "{printed}"
        );
    }
}
