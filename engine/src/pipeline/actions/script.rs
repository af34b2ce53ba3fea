//! An Actions job's `steps:` as one `sh` script, the way a runner executes them.
//!
//! Each `run:` goes in its own shell (bash with `-eo pipefail` unless `shell:` says otherwise)
//! with the step's `env:`, the variables earlier steps wrote to `$GITHUB_ENV`, the directories
//! they wrote to `$GITHUB_PATH`, and its own `$GITHUB_OUTPUT`. Between steps the script keeps
//! the job's state (`$cairn_job`: `success` until a step fails without `continue-on-error`) and
//! each step's `outcome` and `conclusion`, so a step's `if:` ([`super::step_if`]) decides
//! whether it runs — by default only while no step has failed, as on GitHub. The job fails at
//! its end when a step failed, after writing its `outputs:`.
//!
//! `uses:` steps are the built-in actions of [`super::uses`]. `$GITHUB_OUTPUT` and
//! `$GITHUB_ENV` take both of GitHub's forms: `name=value` lines and
//! `name<<DELIMITER` … `DELIMITER` blocks for values of several lines.

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

use super::super::error::Diagnostics;
use super::super::model::Location;
use super::super::parse::parse_env;
use super::super::yaml::{check_keys, entry, location, non_empty_string, scalar_location, string};
use super::STEP_KEYS;
use super::expressions::{Scope, substitute_run, substitute_run_collecting};
use super::matrix::{slug, substitute_matrix};
use super::minutes;
use super::step_if::{default_condition, step_condition};
use super::uses::uses_step;
use crate::pipeline::model::StepFiles;

/// Reads the last value of `k` from a `$GITHUB_OUTPUT` file (both forms; a block of another
/// name is skipped whole, so its lines are never taken for `k=` lines).
const OUTPUT_AWK: &str = r#"d != "" { if ($0 == d) { if (mine) { v = cur; found = 1 }; d = "" } else if (mine) { cur = (n++ ? cur "\n" : "") $0 }; next }
/^[A-Za-z_][A-Za-z0-9_-]*<</ { p = index($0, "<<"); mine = (substr($0, 1, p - 1) == k); d = substr($0, p + 2); cur = ""; n = 0; next }
index($0, k "=") == 1 { v = substr($0, length(k) + 2); found = 1 }
END { if (found) printf "%s", v }
"#;

/// Turns a `$GITHUB_ENV` file into `export NAME='value'` lines for `eval`.
const ENV_AWK: &str = r#"function q(v,  out, i) { out = ""; while ((i = index(v, "'")) > 0) { out = out substr(v, 1, i - 1) "'\"'\"'"; v = substr(v, i + 1) }; return "'" out v "'" }
d != "" { if ($0 == d) { print "export " name "=" q(v); d = "" } else { v = (n++ ? v "\n" : "") $0 }; next }
/^[A-Za-z_][A-Za-z0-9_]*<</ { p = index($0, "<<"); name = substr($0, 1, p - 1); d = substr($0, p + 2); v = ""; n = 0; next }
/^[A-Za-z_][A-Za-z0-9_]*=/ { p = index($0, "="); print "export " substr($0, 1, p - 1) "=" q(substr($0, p + 1)) }
"#;

/// The shell functions a step's `if:` calls (text comparisons are case-insensitive, numbers
/// compare as numbers, as in GitHub's expressions).
pub(super) fn helpers() -> &'static str {
    "cairn_lower() { printf '%s' \"$1\" | tr '[:upper:]' '[:lower:]'; }\n\
     cairn_number() { case \"$1\" in ''|*[!0-9.eE+-]*) return 1;; esac; }\n\
     cairn_equal() { if cairn_number \"$1\" && cairn_number \"$2\"; then awk -v a=\"$1\" -v b=\"$2\" 'BEGIN { exit !(a + 0 == b + 0) }'; else [ \"$(cairn_lower \"$1\")\" = \"$(cairn_lower \"$2\")\" ]; fi; }\n\
     cairn_contains() { case \"$(cairn_lower \"$1\")\" in *\"$(cairn_lower \"$2\")\"*) return 0;; esac; return 1; }\n\
     cairn_starts_with() { case \"$(cairn_lower \"$1\")\" in \"$(cairn_lower \"$2\")\"*) return 0;; esac; return 1; }\n\
     cairn_ends_with() { case \"$(cairn_lower \"$1\")\" in *\"$(cairn_lower \"$2\")\") return 0;; esac; return 1; }\n"
}

/// Shell text giving the value a step of this job last wrote for `key` to its
/// `$GITHUB_OUTPUT`.
pub(super) fn output_reader(step: &str, key: &str) -> String {
    // No double quotes: the text goes inside double-quoted values, and `mktemp -d` paths have
    // no blanks.
    format!(
        "$(awk -v k={} -f $CAIRN_GHA/output.awk $CAIRN_GHA/out.{} 2>/dev/null)",
        shell_quote(key),
        slug(step)
    )
}

/// [`output_reader`] as one quoted shell word, for conditions.
pub(super) fn output_reader_quoted(step: &str, key: &str) -> String {
    format!("\"{}\"", output_reader(step, key))
}

/// Where the script keeps a step's `outcome` or `conclusion`.
pub(super) fn outcome_file(step: &str, field: &str) -> String {
    format!("\"$CAIRN_GHA/{field}.{}\"", slug(step))
}

/// `'text'` for `sh`: nothing inside single quotes is special but the quote itself.
pub(super) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The job's steps as one `sh` script; then the job's `outputs:` and its verdict.
pub(super) fn job_script(
    mapping: &MarkedMappingNode,
    label: &str,
    job_location: Location,
    scope: &Scope<'_>,
    secrets: &mut Vec<String>,
    files: &mut StepFiles,
    diagnostics: &mut Diagnostics,
) -> String {
    let mut script = format!(
        "set -e\n\
         CAIRN_GHA=$(mktemp -d); export CAIRN_GHA; trap 'rm -rf \"$CAIRN_GHA\"' EXIT\n\
         : > \"$CAIRN_GHA/env\"; : > \"$CAIRN_GHA/path\"\n\
         export CI=true GITHUB_ACTIONS=true GITHUB_WORKSPACE=\"$CAIRN_WORKSPACE\" GITHUB_SHA=\"${{CAIRN_COMMIT:-}}\" GITHUB_REF_NAME=\"${{CAIRN_BRANCH:-}}\" GITHUB_REF=\"refs/heads/${{CAIRN_BRANCH:-}}\" GITHUB_EVENT_NAME=push GITHUB_ENV=\"$CAIRN_GHA/env\" GITHUB_PATH=\"$CAIRN_GHA/path\" RUNNER_OS=Linux RUNNER_TEMP=\"$CAIRN_GHA/tmp\"\n\
         mkdir -p \"$RUNNER_TEMP\"\n\
         cat > \"$CAIRN_GHA/output.awk\" <<'CAIRN_AWK'\n{OUTPUT_AWK}CAIRN_AWK\n\
         cat > \"$CAIRN_GHA/env.awk\" <<'CAIRN_AWK'\n{ENV_AWK}CAIRN_AWK\n\
         {}cairn_job=success; cairn_failed=\n",
        helpers()
    );
    let steps = match entry(mapping, "steps") {
        Some((_, Node::Sequence(items))) if !items.is_empty() => items,
        Some((key, _)) => {
            diagnostics.report(
                scalar_location(key),
                format!("`steps` of {label} must be a non-empty list of steps"),
            );
            return script;
        }
        None => {
            diagnostics.report(
                job_location,
                format!("{label} is missing required key `steps`"),
            );
            return script;
        }
    };
    for (index, node) in steps.iter().enumerate() {
        let Some(step) = node.as_mapping() else {
            diagnostics.report(
                location(node),
                format!(
                    "step {} of {label} must be a mapping with `run` or `uses`",
                    index + 1
                ),
            );
            continue;
        };
        if let Some(block) = step_block(
            step,
            node,
            index,
            label,
            job_location,
            scope,
            secrets,
            files,
            diagnostics,
        ) {
            script.push_str(&block);
        }
    }
    outputs_block(mapping, label, scope, diagnostics, &mut script);
    script.push_str(
        "if [ \"$cairn_job\" != success ]; then echo \"the job failed at $cairn_failed\" >&2; exit 1; fi\n",
    );
    script
}

/// One step: its condition, its shell, and the bookkeeping of its outcome.
#[allow(clippy::too_many_arguments)] // One call site; the job's parts it reads.
fn step_block(
    step: &MarkedMappingNode,
    node: &Node,
    index: usize,
    label: &str,
    job_location: Location,
    scope: &Scope<'_>,
    secrets: &mut Vec<String>,
    files: &mut StepFiles,
    diagnostics: &mut Diagnostics,
) -> Option<String> {
    let step_id = entry(step, "id")
        .and_then(|(_, n)| n.as_scalar())
        .map(|s| s.as_str().trim().to_owned());
    let step_label = match (
        &step_id,
        entry(step, "name").and_then(|(_, n)| n.as_scalar()),
    ) {
        (Some(id), _) => format!("step `{id}` of {label}"),
        (None, Some(name)) => format!("step {} (`{}`) of {label}", index + 1, name.as_str()),
        (None, None) => format!("step {} of {label}", index + 1),
    };
    check_keys(step, STEP_KEYS, &format!("in {step_label}"), diagnostics);
    let condition = match entry(step, "if") {
        None => default_condition(),
        Some((_, node)) => {
            let text = string(node, &format!("`if` of {step_label}"), diagnostics)?;
            match step_condition(&substitute_matrix(text.as_str(), scope.matrix), scope) {
                Ok(condition) => condition,
                Err(message) => {
                    diagnostics.report(
                        scalar_location(text),
                        format!("in `if` of {step_label}: {message}"),
                    );
                    return None;
                }
            }
        }
    };
    let command = match (entry(step, "uses"), entry(step, "run")) {
        (Some((_, uses)), None) => uses_step(uses, step, &step_label, scope, files, diagnostics)?,
        (None, Some((_, run))) => run_command(
            step,
            run,
            &step_label,
            job_location,
            scope,
            secrets,
            diagnostics,
        )?,
        (Some((key, _)), Some(_)) => {
            diagnostics.report(
                scalar_location(key),
                format!("{step_label} has both `uses` and `run`"),
            );
            return None;
        }
        (None, None) => {
            diagnostics.report(
                location(node),
                format!("{step_label} needs `run` (a shell command) or `uses: actions/checkout@…`"),
            );
            return None;
        }
    };
    let continue_on_error = match entry(step, "continue-on-error") {
        None => false,
        Some((_, node)) => match node.as_scalar().map(|s| s.as_str().trim()) {
            Some("true") => true,
            Some("false") => false,
            _ => {
                diagnostics.report(
                    location(node),
                    format!("`continue-on-error` of {step_label} must be true or false"),
                );
                false
            }
        },
    };
    let id = slug(step_id.as_deref().unwrap_or(&format!("step{}", index + 1)));
    let output = format!("$CAIRN_GHA/out.{id}");
    let on_failure = if continue_on_error {
        "cairn_conclusion=success; echo \"(continue-on-error: the step failed, the job goes on)\""
    } else {
        "cairn_conclusion=failure; cairn_job=failure; cairn_failed=${cairn_failed:-$cairn_label}"
    };
    Some(format!(
        "# {step_label}\n\
         cairn_label={label_word}\n\
         if {condition}; then\n\
         cairn_rc=0\n\
         (: > \"{output}\"; export GITHUB_OUTPUT=\"{output}\"; eval \"$(awk -f \"$CAIRN_GHA/env.awk\" \"$CAIRN_GHA/env\")\"; while IFS= read -r cairn_dir; do if [ -n \"$cairn_dir\" ]; then PATH=\"$cairn_dir:$PATH\"; fi; done < \"$CAIRN_GHA/path\"; {command}) || cairn_rc=$?\n\
         if [ \"$cairn_rc\" -eq 0 ]; then cairn_outcome=success; cairn_conclusion=success; else cairn_outcome=failure; echo \"$cairn_label failed (exit status $cairn_rc)\" >&2; {on_failure}; fi\n\
         else cairn_outcome=skipped; cairn_conclusion=skipped; echo \"$cairn_label skipped: its if is false\"; fi\n\
         printf '%s' \"$cairn_outcome\" > {outcome}; printf '%s' \"$cairn_conclusion\" > {conclusion}\n",
        label_word = shell_quote(&step_label),
        outcome = outcome_file(&id, "outcome"),
        conclusion = outcome_file(&id, "conclusion"),
    ))
}

/// A `run:` step's command inside its subshell: its env, directory, timeout and shell.
fn run_command(
    step: &MarkedMappingNode,
    run: &Node,
    step_label: &str,
    job_location: Location,
    scope: &Scope<'_>,
    secrets: &mut Vec<String>,
    diagnostics: &mut Diagnostics,
) -> Option<String> {
    let text = non_empty_string(run, &format!("`run` of {step_label}"), diagnostics)?;
    let text = match substitute_run_collecting(text.as_str(), scope, secrets) {
        Ok(text) => text,
        Err(message) => {
            diagnostics.report(
                scalar_location(text),
                format!("in `run` of {step_label}: {message}"),
            );
            return None;
        }
    };
    let shell = match entry(step, "shell")
        .and_then(|(_, n)| n.as_scalar())
        .map(|s| s.as_str().trim())
    {
        None | Some("bash") => "bash --noprofile --norc -eo pipefail -c",
        Some("sh") => "sh -e -c",
        Some("python") => "python3 -c",
        Some(other) => {
            let at = entry(step, "shell").map_or(job_location, |(k, _)| scalar_location(k));
            diagnostics.report(
                at,
                format!("`shell: {other}` of {step_label} is not supported (bash, sh, python)"),
            );
            return None;
        }
    };
    let mut prefix = String::new();
    if let Some((_, node)) = entry(step, "env") {
        for (key, value) in parse_env(node, &format!("`env` of {step_label}"), diagnostics) {
            let value =
                substitute_run_collecting(&substitute_matrix(&value, scope.matrix), scope, secrets)
                    .unwrap_or(value);
            prefix.push_str(&format!(
                "export {key}=\"{}\"; ",
                value.replace('"', "\\\"")
            ));
        }
    }
    if let Some((_, dir)) = entry(step, "working-directory")
        && let Some(dir) = non_empty_string(
            dir,
            &format!("`working-directory` of {step_label}"),
            diagnostics,
        )
    {
        prefix.push_str(&format!("cd {} || exit 1; ", shell_quote(dir.as_str())));
    }
    let timeout = entry(step, "timeout-minutes")
        .and_then(|(_, node)| {
            minutes(
                node,
                &format!("`timeout-minutes` of {step_label}"),
                diagnostics,
            )
        })
        .map(|t| format!("timeout {} ", t.as_secs().max(1)))
        .unwrap_or_default();
    Some(format!("{prefix}{timeout}{shell} {}", shell_quote(&text)))
}

/// The job's `outputs:`, written to the step's `$CAIRN_OUTPUT` in the block form so a value
/// of several lines stays whole.
fn outputs_block(
    mapping: &MarkedMappingNode,
    label: &str,
    scope: &Scope<'_>,
    diagnostics: &mut Diagnostics,
    script: &mut String,
) {
    let Some((_, outputs)) = entry(mapping, "outputs") else {
        return;
    };
    let Some(outputs) = outputs.as_mapping() else {
        diagnostics.report(
            location(outputs),
            format!("`outputs` of {label} must be a mapping of names to values"),
        );
        return;
    };
    for (key, value) in outputs.iter() {
        let Some(text) = string(
            value,
            &format!("output `{}` of {label}", key.as_str()),
            diagnostics,
        ) else {
            continue;
        };
        match substitute_run(text.as_str(), scope) {
            Ok(text) => script.push_str(&format!(
                "cairn_value=\"{}\"; cairn_eof=CAIRN_EOF_$$_$(date +%s%N); printf '%s<<%s\\n%s\\n%s\\n' {} \"$cairn_eof\" \"$cairn_value\" \"$cairn_eof\" >> \"$CAIRN_OUTPUT\"\n",
                text.replace('"', "\\\""),
                shell_quote(key.as_str()),
            )),
            Err(message) => diagnostics.report(
                scalar_location(text),
                format!("in output `{}` of {label}: {message}", key.as_str()),
            ),
        }
    }
}
