//! The Actions expression language where a job reads it: a job's `if:` as a Cairn condition
//! over the steps' states and outputs, and `${{ … }}` in `run:`, `env:` and `outputs:` as text
//! the job's shell reads.

use std::collections::BTreeMap;

use super::script::output_reader;

/// What one expression of `${{ … }}` or `if:` may read besides the needs.
pub(super) struct Scope<'a> {
    pub(super) job: &'a str,
    pub(super) matrix: &'a BTreeMap<String, String>,
    /// Job id → its step ids (a matrix job has several; outputs come from the last).
    pub(super) ids: &'a BTreeMap<&'a str, Vec<String>>,
    pub(super) needs: &'a [String],
}

/// Every need succeeded (GitHub's implicit `success()`); `true` without needs.
pub(super) fn success(scope: &Scope<'_>) -> String {
    let terms: Vec<String> = dependency_ids(scope)
        .map(|id| format!("steps.{id}.state == 'succeeded'"))
        .collect();
    if terms.is_empty() {
        "true".to_owned()
    } else {
        terms.join(" && ")
    }
}

fn failure(scope: &Scope<'_>) -> String {
    let terms: Vec<String> = dependency_ids(scope)
        .map(|id| format!("steps.{id}.state == 'failed'"))
        .collect();
    if terms.is_empty() {
        "false".to_owned()
    } else {
        format!("({})", terms.join(" || "))
    }
}

fn dependency_ids<'a>(scope: &'a Scope<'a>) -> impl Iterator<Item = &'a String> + 'a {
    scope
        .needs
        .iter()
        .flat_map(|need| scope.ids.get(need.as_str()).into_iter().flatten())
}

/// The step id whose outputs `needs.<job>` means: the last combination of a matrix job.
pub(super) fn output_id<'a>(scope: &'a Scope<'a>, job: &str) -> Result<&'a str, String> {
    if !scope.needs.iter().any(|need| need == job) {
        return Err(format!(
            "`needs.{job}` names a job that is not in `needs` of job `{}`",
            scope.job
        ));
    }
    scope
        .ids
        .get(job)
        .and_then(|ids| ids.last())
        .map(String::as_str)
        .ok_or_else(|| format!("unknown job `{job}`"))
}

/// An Actions `if:` as a Cairn condition.
pub(super) fn translate_if(text: &str, scope: &Scope<'_>) -> Result<String, String> {
    let inner = unwrap_expression(text.trim());
    let mut out = String::new();
    let mut status_function = false;
    let chars: Vec<char> = inner.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // A string literal, copied whole ('' is a quote inside it).
            let start = i;
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            out.extend(&chars[start..i.min(chars.len())]);
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.' | '-'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let call = chars.get(i) == Some(&'(') && chars.get(i + 1) == Some(&')');
            if call {
                i += 2;
                status_function = true;
                out.push_str(&match word.as_str() {
                    "success" => format!("({})", success(scope)),
                    "failure" => failure(scope),
                    "always" => "true".to_owned(),
                    "cancelled" => "false".to_owned(),
                    other => return Err(format!("function `{other}()` is not supported (supported: success(), failure(), always(), cancelled())")),
                });
                continue;
            }
            if chars.get(i) == Some(&'(') {
                return Err(format!("function `{word}(…)` is not supported"));
            }
            out.push_str(&translate_path(&word, scope, true)?);
            continue;
        }
        out.push(c);
        i += 1;
    }
    if status_function {
        Ok(out)
    } else {
        let guard = success(scope);
        Ok(if guard == "true" {
            out
        } else {
            format!("{guard} && ({out})")
        })
    }
}

pub(super) fn unwrap_expression(text: &str) -> &str {
    text.strip_prefix("${{")
        .and_then(|rest| rest.strip_suffix("}}"))
        .map_or(text, str::trim)
}

/// A dotted name of the Actions expression language as a Cairn condition path or value.
pub(super) fn translate_path(
    word: &str,
    scope: &Scope<'_>,
    in_condition: bool,
) -> Result<String, String> {
    let parts: Vec<&str> = word.split('.').collect();
    let quote = |value: &str| format!("'{}'", value.replace('\'', "''"));
    match parts.as_slice() {
        ["true" | "false" | "null"] => Ok(word.to_owned()),
        ["needs", job, "outputs", key] => {
            Ok(format!("steps.{}.outputs.{key}", output_id(scope, job)?))
        }
        ["needs", job, "result"] => Ok(format!("steps.{}.state", output_id(scope, job)?)),
        ["matrix", key] => scope
            .matrix
            .get(*key)
            .map(|value| {
                if in_condition {
                    quote(value)
                } else {
                    value.clone()
                }
            })
            .ok_or_else(|| format!("`matrix.{key}` is not in the matrix of job `{}`", scope.job)),
        ["github", "ref_name"] => Ok("branch".to_owned()),
        ["github", "sha"] => Ok("commit".to_owned()),
        _ => Err(format!(
            "`{word}` is not supported here (supported: needs.<job>.outputs.<name>, needs.<job>.result, matrix.<name>, github.sha, github.ref_name)"
        )),
    }
}

/// `${{ … }}` in `run:` text, replaced by what the step's shell can read.
pub(super) fn substitute_run(text: &str, scope: &Scope<'_>) -> Result<String, String> {
    substitute_run_collecting(text, scope, &mut Vec::new())
}

/// [`substitute_run`], adding the names of the secrets it reads to `secrets`.
pub(super) fn substitute_run_collecting(
    text: &str,
    scope: &Scope<'_>,
    secrets: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            return Err("`${{` without its closing `}}`".to_owned());
        };
        let expression = after[..end].trim();
        let parts: Vec<&str> = expression.split('.').collect();
        let value = match parts.as_slice() {
            ["matrix", _] => translate_path(expression, scope, false)?,
            ["env", name] => format!("${{{name}}}"),
            ["github", "sha"] => "${CAIRN_COMMIT:-}".to_owned(),
            ["github", "ref_name"] => "${CAIRN_BRANCH:-}".to_owned(),
            ["github", "workspace"] => "${CAIRN_WORKSPACE}".to_owned(),
            ["github", "run_id"] => "${CAIRN_RUN_ID}".to_owned(),
            ["needs", job, "outputs", key] => {
                let id = output_id(scope, job)?;
                format!(
                    "${{{}}}",
                    crate::pipeline::dependency_output_variable(id, key)
                )
            }
            ["steps", step, "outputs", key] => output_reader(step, key),
            ["secrets", name] => {
                crate::secrets::check_name(name).map_err(|error| error.to_string())?;
                secrets.push((*name).to_owned());
                format!("${{{name}}}")
            }
            _ => {
                return Err(format!(
                    "`${{{{ {expression} }}}}` is not supported in `run` (supported: matrix.*, env.*, secrets.*, github.sha, github.ref_name, github.workspace, github.run_id, needs.<job>.outputs.*, steps.<id>.outputs.*)"
                ));
            }
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    /// A job's matrix values, the step ids of every job, and the job's needs.
    type ScopeParts = (
        BTreeMap<String, String>,
        BTreeMap<&'static str, Vec<String>>,
        Vec<String>,
    );

    fn scope_parts() -> ScopeParts {
        let matrix = BTreeMap::from([("os".to_owned(), "linux".to_owned())]);
        let ids = BTreeMap::from([
            ("analyze", vec!["analyze".to_owned()]),
            ("test", vec!["test-1".to_owned(), "test-2".to_owned()]),
        ]);
        (matrix, ids, vec!["analyze".to_owned(), "test".to_owned()])
    }

    #[test]
    fn translates_conditions() {
        let (matrix, ids, needs) = scope_parts();
        let scope = Scope {
            job: "deploy",
            matrix: &matrix,
            ids: &ids,
            needs: &needs,
        };
        assert_eq!(
            translate_if("${{ needs.analyze.outputs.risk != 'low' }}", &scope).unwrap(),
            "steps.analyze.state == 'succeeded' && steps.test-1.state == 'succeeded' && steps.test-2.state == 'succeeded' && (steps.analyze.outputs.risk != 'low')"
        );
        assert_eq!(translate_if("always()", &scope).unwrap(), "true");
        assert_eq!(
            translate_if("failure() && matrix.os == 'linux'", &scope).unwrap(),
            "(steps.analyze.state == 'failed' || steps.test-1.state == 'failed' || steps.test-2.state == 'failed') && 'linux' == 'linux'"
        );
        let error = translate_if("contains(github.ref, 'x')", &scope).unwrap_err();
        assert!(error.contains("`contains(…)` is not supported"), "{error}");
        let error = translate_if("needs.build.outputs.x", &scope).unwrap_err();
        assert!(error.contains("not in `needs`"), "{error}");
    }

    #[test]
    fn substitutes_run_text() {
        let (matrix, ids, needs) = scope_parts();
        let scope = Scope {
            job: "deploy",
            matrix: &matrix,
            ids: &ids,
            needs: &needs,
        };
        assert_eq!(
            substitute_run(
                "echo ${{ matrix.os }} ${{ needs.analyze.outputs.risk }} ${{ github.sha }}",
                &scope
            )
            .unwrap(),
            "echo linux ${CAIRN_STEP_ANALYZE_RISK} ${CAIRN_COMMIT:-}"
        );
        let mut secrets = Vec::new();
        assert_eq!(
            substitute_run_collecting("echo ${{ secrets.X }}", &scope, &mut secrets).unwrap(),
            "echo ${X}"
        );
        assert_eq!(secrets, ["X"]);
        assert!(substitute_run("echo ${{ inputs.x }}", &scope).is_err());
    }
}
