//! Asking the router for a test (`propose_tests`, a JSON answer `{test_name, code}`) and
//! placing the answer in the tree: a Rust test becomes a `#[cfg(test)]` module appended to the
//! function's own file (so private functions are reachable through `use super::*`); a Python
//! test becomes its own `test_cairn_*.py` module.

use serde_json::Value;

use super::functions::Language;
use crate::llm::{CallScope, Request, Router, Task};

/// A function the commit changed that no test refers to.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: String,
    pub name: String,
    pub language: Language,
    /// The function's source at the new commit.
    pub source: String,
    /// The file's diff, for the model's context.
    pub diff: String,
    /// Whether the repository has a `tests/` directory (where a Python test goes).
    pub has_tests_dir: bool,
}

/// The model's answer, placed.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub test_name: String,
    pub code: String,
    pub tier: String,
    /// The file written (relative to the repository root).
    pub test_path: String,
    /// The runner's filter for just this test (a Rust module path), if any.
    pub filter: Option<String>,
}

impl Target {
    /// The dotted module a Python test imports the function from.
    pub fn python_module(&self) -> String {
        self.path
            .trim_end_matches(".py")
            .trim_end_matches("/__init__")
            .replace('/', ".")
    }

    fn instruction(&self) -> String {
        match self.language {
            Language::Rust => format!(
                "You write one Rust unit test. Answer only with JSON: test_name (a snake_case identifier) and code: \
                 one complete `#[test] fn <test_name>() {{ ... }}` item. It is placed in a `#[cfg(test)]` module at \
                 the end of {} with `use super::*;`, so call `{}` directly. Assert exact values the changed code \
                 must produce, so the test fails on the code before the change.",
                self.path, self.name
            ),
            Language::Python => format!(
                "You write one pytest test. Answer only with JSON: test_name (a snake_case identifier starting with \
                 test_) and code: a complete Python module that does `from {} import {}` and defines \
                 `def <test_name>():` with plain assert statements (no fixtures, no network). Assert exact values \
                 the changed code must produce, so the test fails on the code before the change.",
                self.python_module(),
                self.name
            ),
        }
    }

    fn file_stem(&self) -> String {
        self.path
            .trim_end_matches(".py")
            .replace(['/', '.', '-'], "_")
    }
}

/// Asks for a test of `target`; `Err` says why there is none to validate.
pub async fn propose(
    router: &Router,
    scope: &CallScope,
    target: &Target,
) -> Result<Proposal, String> {
    let request = Request {
        task: Task::ProposeTests,
        instruction: target.instruction(),
        input: format!(
            "File: {}\nFunction `{}` after the change:\n\n{}",
            target.path, target.name, target.source
        ),
        diff: Some(target.diff.clone()),
    };
    // Rules cannot write tests: without a model there is no proposal.
    let answer = router.ask(Some(scope), request, || Value::Null).await;
    let tier = answer.tier.as_str().to_string();
    let Some(Value::Object(fields)) = answer.value else {
        let why = if answer.fallbacks.is_empty() {
            "no model answered".to_string()
        } else {
            answer.fallbacks.join("; ")
        };
        return Err(format!("no proposal ({tier}): {why}"));
    };
    let text = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let (test_name, code) = (text("test_name"), unfence(&text("code")));
    if test_name.is_empty() || !test_name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(format!(
            "the {tier} answer's test_name {test_name:?} is not an identifier"
        ));
    }
    if code.is_empty() {
        return Err(format!(
            "the {tier} answer has no code (only Markdown fences or blanks)"
        ));
    }
    Ok(place(target, test_name, code, tier))
}

/// Small models wrap code in Markdown fences even inside JSON; the fences are not code.
fn unfence(code: &str) -> String {
    let mut lines: Vec<&str> = code.lines().collect();
    if lines
        .first()
        .is_some_and(|l| l.trim_start().starts_with("```"))
    {
        lines.remove(0);
    }
    if lines.last().is_some_and(|l| l.trim() == "```") {
        lines.pop();
    }
    lines.join("\n").trim().to_string()
}

fn place(target: &Target, test_name: String, code: String, tier: String) -> Proposal {
    match target.language {
        Language::Rust => {
            let module = format!("cairn_generated_{}", target.name);
            Proposal {
                filter: Some(format!("{module}::")),
                test_path: target.path.clone(),
                test_name,
                code,
                tier,
            }
        }
        Language::Python => {
            let dir = if target.has_tests_dir { "tests/" } else { "" };
            let test_path = format!("{dir}test_cairn_{}_{}.py", target.file_stem(), target.name);
            Proposal {
                filter: None,
                test_path,
                test_name,
                code,
                tier,
            }
        }
    }
}

/// The test file's content once the proposal is placed: for Rust the original file (`current`)
/// with the module appended, for Python the module itself.
pub fn placed_text(proposal: &Proposal, language: Language, current: Option<&str>) -> String {
    match language {
        Language::Rust => {
            let module = proposal
                .filter
                .as_deref()
                .unwrap_or("cairn_generated::")
                .trim_end_matches("::");
            let body: String = proposal
                .code
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect();
            let mut text = current.unwrap_or_default().to_string();
            if !text.ends_with('\n') && !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&format!("\n#[cfg(test)]\nmod {module} {{\n    #[allow(unused_imports)]\n    use super::*;\n\n{body}}}\n"));
            text
        }
        Language::Python => {
            let mut code = proposal.code.clone();
            if !code.ends_with('\n') {
                code.push('\n');
            }
            code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str, language: Language) -> Target {
        Target {
            path: path.into(),
            name: "charge".into(),
            language,
            source: String::new(),
            diff: String::new(),
            has_tests_dir: true,
        }
    }

    #[test]
    fn markdown_fences_are_not_code() {
        assert_eq!(
            unfence("```rust\n#[test]\nfn t() {}\n```"),
            "#[test]\nfn t() {}"
        );
        assert_eq!(unfence("```"), "");
        assert_eq!(unfence("x = 1"), "x = 1");
    }

    #[test]
    fn proposals_are_placed_per_language() {
        let python = place(
            &target("src/pay.py", Language::Python),
            "test_charge".into(),
            "x = 1".into(),
            "remote".into(),
        );
        assert_eq!(python.test_path, "tests/test_cairn_src_pay_charge.py");
        assert_eq!(
            target("src/pay.py", Language::Python).python_module(),
            "src.pay"
        );
        assert_eq!(placed_text(&python, Language::Python, None), "x = 1\n");

        let rust = place(
            &target("src/lib.rs", Language::Rust),
            "charges".into(),
            "#[test]\nfn charges() {}".into(),
            "local".into(),
        );
        assert_eq!(rust.test_path, "src/lib.rs");
        assert_eq!(rust.filter.as_deref(), Some("cairn_generated_charge::"));
        let text = placed_text(&rust, Language::Rust, Some("pub fn charge() {}"));
        assert!(
            text.starts_with("pub fn charge() {}\n\n#[cfg(test)]\nmod cairn_generated_charge {\n"),
            "{text}"
        );
        assert!(
            text.ends_with("    #[test]\n    fn charges() {}\n}\n"),
            "{text}"
        );
    }
}
