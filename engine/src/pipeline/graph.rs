//! Pictures of a workflow's DAG for `cairn graph`: Mermaid (renders in Markdown on most forges)
//! and Graphviz DOT. A step with a `when:` condition is drawn with a dashed border and the
//! condition as the label of its incoming edges (or in its box when it has no dependencies),
//! so the risk routing is visible at a glance.

use std::fmt::Write;

use super::model::{Action, Step, Workflow};

/// What a step does, in a few words.
fn summary(step: &Step) -> String {
    match &step.action {
        Action::Agent { name, .. } => format!("agent: {name}"),
        Action::Run { command } => {
            let first_line = command
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("");
            let more = if command.trim().lines().count() > 1 {
                " …"
            } else {
                ""
            };
            format!("run: {first_line}{more}")
        }
    }
}

fn box_lines(step: &Step) -> Vec<String> {
    let mut lines = vec![step.name.clone()];
    if step.name != step.id {
        lines.push(format!("({})", step.id));
    }
    lines.push(summary(step));
    if let Some(when) = &step.when
        && step.depends_on.is_empty()
    {
        lines.push(format!("when: {}", when.source()));
    }
    lines
}

/// Mermaid text is quoted with `"`; these entity codes keep any label intact.
fn mermaid_escape(text: &str) -> String {
    text.replace('&', "#amp;")
        .replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

/// Mermaid node ids must be plain words; step ids with `-` are mapped to `_` plus the index
/// so that `test-extra` and `test_extra` cannot collide.
fn mermaid_id(index: usize, step: &Step) -> String {
    format!("s{index}_{}", step.id.replace('-', "_"))
}

pub fn to_mermaid(workflow: &Workflow) -> String {
    let mut out = String::from("flowchart TD\n");
    for (index, step) in workflow.steps.iter().enumerate() {
        let label = box_lines(step)
            .iter()
            .map(|line| mermaid_escape(line))
            .collect::<Vec<_>>()
            .join("<br/>");
        let _ = writeln!(out, "    {}[\"{label}\"]", mermaid_id(index, step));
    }
    for (index, step) in workflow.steps.iter().enumerate() {
        for dependency in &step.depends_on {
            let Some(from) = workflow
                .steps
                .iter()
                .position(|candidate| candidate.id == *dependency)
            else {
                continue;
            };
            let (source, target) = (
                mermaid_id(from, &workflow.steps[from]),
                mermaid_id(index, step),
            );
            match &step.when {
                Some(when) => {
                    let _ = writeln!(
                        out,
                        "    {source} -.->|\"{}\"| {target}",
                        mermaid_escape(when.source())
                    );
                }
                None => {
                    let _ = writeln!(out, "    {source} --> {target}");
                }
            }
        }
    }
    let conditional: Vec<String> = workflow
        .steps
        .iter()
        .enumerate()
        .filter(|(_, step)| step.when.is_some())
        .map(|(index, step)| mermaid_id(index, step))
        .collect();
    if !conditional.is_empty() {
        out.push_str("    classDef conditional stroke-dasharray: 5 5\n");
        let _ = writeln!(out, "    class {} conditional", conditional.join(","));
    }
    out
}

/// A DOT string literal.
fn dot_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

pub fn to_dot(workflow: &Workflow) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_quote(&workflow.name));
    out.push_str("    rankdir=TB;\n    node [shape=box, fontname=\"Helvetica\"];\n");
    for step in &workflow.steps {
        let style = if step.when.is_some() {
            ", style=dashed"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "    {} [label={}{style}];",
            dot_quote(&step.id),
            dot_quote(&box_lines(step).join("\n"))
        );
    }
    for step in &workflow.steps {
        for dependency in &step.depends_on {
            match &step.when {
                Some(when) => {
                    let _ = writeln!(
                        out,
                        "    {} -> {} [label={}, style=dashed];",
                        dot_quote(dependency),
                        dot_quote(&step.id),
                        dot_quote(when.source())
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "    {} -> {};",
                        dot_quote(dependency),
                        dot_quote(&step.id)
                    );
                }
            }
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::super::load::{LoadOptions, load_str};
    use super::*;

    const WORKFLOW: &str = r#"
name: demo
steps:
  - id: analyze
    agent: orchestrator
  - id: test-extra
    name: Extra "slow" tests
    run: make test-extra
    depends_on: analyze
    when: risk == high
  - id: build
    run: |
      make build
      make package
    depends_on: [test-extra]
"#;

    fn workflow() -> Workflow {
        load_str("demo.yaml", WORKFLOW, &LoadOptions::default()).unwrap()
    }

    #[test]
    fn mermaid_shows_conditions_on_edges() {
        let text = to_mermaid(&workflow());
        assert!(text.starts_with("flowchart TD\n"), "{text}");
        assert!(text.contains("s1_test_extra[\"Extra #quot;slow#quot; tests<br/>(test-extra)<br/>run: make test-extra\"]"), "{text}");
        assert!(
            text.contains("s0_analyze -.->|\"risk == high\"| s1_test_extra"),
            "{text}"
        );
        assert!(text.contains("s1_test_extra --> s2_build"), "{text}");
        assert!(text.contains("run: make build …"), "{text}");
        assert!(text.contains("class s1_test_extra conditional"), "{text}");
    }

    #[test]
    fn dot_shows_conditions_on_edges() {
        let text = to_dot(&workflow());
        assert!(text.starts_with("digraph \"demo\" {\n"), "{text}");
        assert!(
            text.contains("\"analyze\" -> \"test-extra\" [label=\"risk == high\", style=dashed];"),
            "{text}"
        );
        assert!(text.contains("label=\"Extra \\\"slow\\\" tests\\n(test-extra)\\nrun: make test-extra\", style=dashed"), "{text}");
        assert!(text.contains("\"test-extra\" -> \"build\";"), "{text}");
        assert!(text.trim_end().ends_with('}'));
    }
}
