//! A step's `if:` inside an Actions job, as a condition of the job's shell script.
//!
//! A job runs as one script (see [`super::script`]), so a step's condition is evaluated by that
//! shell between steps: this module parses the expression once, at load time — a typo is an
//! error with its position, not a step silently skipped — and renders it as `sh` that reads the
//! job's state (`$cairn_job`), the earlier steps' outputs and outcomes, the matrix and the
//! environment.
//!
//! Understood, as on GitHub: `success()` (no earlier step failed; implied when the expression
//! names no status function), `failure()`, `always()`, `cancelled()`; `contains`, `startsWith`,
//! `endsWith` (case-insensitive); `==` and `!=` (case-insensitive for text); `!`, `&&`, `||`,
//! parentheses; `'text'`, numbers, `true`, `false`, `null`; and the contexts
//! `steps.<id>.outputs.<name>`, `steps.<id>.outcome`, `steps.<id>.conclusion`,
//! `needs.<job>.outputs.<name>`, `matrix.<name>`, `env.<NAME>`, `github.sha`, `github.ref`,
//! `github.ref_name`, `github.event_name`, `runner.os`. A value is true when it is not empty
//! (GitHub's rule for text, which is what outputs are).

use super::expressions::{Scope, unwrap_expression};
use super::script::{outcome_file, output_reader_quoted, shell_quote};

/// Deeper nesting than this is refused instead of risking the parser's stack.
const MAX_DEPTH: usize = 32;

/// An expression as parsed.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// A value known when the workflow is read (literals, matrix values).
    Known(Known),
    /// A shell word whose text is read when the step is reached.
    Word(String),
    Status(Status),
    Call(Function, Vec<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Equal(bool, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Known {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    Success,
    Failure,
    Always,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Function {
    Contains,
    StartsWith,
    EndsWith,
}

/// `if:` of a step as a shell condition (a command list whose exit status is the answer).
pub(super) fn step_condition(text: &str, scope: &Scope<'_>) -> Result<String, String> {
    let inner = unwrap_expression(text.trim());
    let mut parser = Parser {
        chars: inner.chars().collect(),
        at: 0,
        depth: 0,
        scope,
        status_named: false,
    };
    let expr = parser.or()?;
    parser.blanks();
    if parser.at < parser.chars.len() {
        return Err(parser.error("unexpected text"));
    }
    let shell = condition(&expr);
    Ok(if parser.status_named {
        shell
    } else {
        format!("{} && {{ {shell}; }}", status(Status::Success))
    })
}

/// The job's default for a step without `if:` (GitHub's implicit `success()`).
pub(super) fn default_condition() -> String {
    status(Status::Success)
}

struct Parser<'a> {
    chars: Vec<char>,
    at: usize,
    depth: usize,
    scope: &'a Scope<'a>,
    status_named: bool,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        let near: String = self.chars[self.at.min(self.chars.len())..]
            .iter()
            .take(20)
            .collect();
        if near.is_empty() {
            format!("{what} at the end of the expression")
        } else {
            format!("{what} at character {} (`{near}`)", self.at + 1)
        }
    }

    fn blanks(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.blanks();
        let token: Vec<char> = token.chars().collect();
        if self.chars[self.at..].starts_with(&token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<T, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("the expression nests too deeply"));
        }
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.blanks();
        if self.chars.get(self.at) == Some(&'!') && self.chars.get(self.at + 1) != Some(&'=') {
            self.at += 1;
            let inner = self.nested(Self::unary)?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        let left = self.primary()?;
        for (token, equal) in [("==", true), ("!=", false)] {
            if self.eat(token) {
                let right = self.primary()?;
                return Ok(Expr::Equal(equal, Box::new(left), Box::new(right)));
            }
        }
        self.blanks();
        if matches!(self.chars.get(self.at), Some('<' | '>')) {
            return Err(self.error("`<` and `>` are not supported in a step's `if`"));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        self.blanks();
        let Some(&c) = self.chars.get(self.at) else {
            return Err(self.error("a value is missing"));
        };
        if c == '(' {
            self.at += 1;
            let inner = self.nested(Self::or)?;
            if !self.eat(")") {
                return Err(self.error("`)` is missing"));
            }
            return Ok(inner);
        }
        if c == '\'' {
            return self.text();
        }
        if c.is_ascii_digit() || c == '-' || c == '.' {
            let start = self.at;
            self.at += 1;
            while self
                .chars
                .get(self.at)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
            {
                self.at += 1;
            }
            let word: String = self.chars[start..self.at].iter().collect();
            return word
                .parse::<f64>()
                .map(|n| Expr::Known(Known::Number(n)))
                .map_err(|_| format!("`{word}` is not a number"));
        }
        if !(c.is_ascii_alphabetic() || c == '_') {
            return Err(self.error("a value is expected"));
        }
        let start = self.at;
        while self
            .chars
            .get(self.at)
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            self.at += 1;
        }
        let word: String = self.chars[start..self.at].iter().collect();
        if self.eat("(") {
            return self.call(&word);
        }
        self.path(&word)
    }

    fn text(&mut self) -> Result<Expr, String> {
        // After the opening quote; `''` is a quote inside the text.
        self.at += 1;
        let mut text = String::new();
        loop {
            match self.chars.get(self.at) {
                None => return Err(self.error("a text is not closed with `'`")),
                Some('\'') if self.chars.get(self.at + 1) == Some(&'\'') => {
                    text.push('\'');
                    self.at += 2;
                }
                Some('\'') => {
                    self.at += 1;
                    return Ok(Expr::Known(Known::Text(text)));
                }
                Some(&c) => {
                    text.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn call(&mut self, name: &str) -> Result<Expr, String> {
        let status = match name {
            "success" => Some(Status::Success),
            "failure" => Some(Status::Failure),
            "always" => Some(Status::Always),
            "cancelled" => Some(Status::Cancelled),
            _ => None,
        };
        if let Some(status) = status {
            if !self.eat(")") {
                return Err(self.error(&format!("`{name}()` takes no arguments")));
            }
            self.status_named = true;
            return Ok(Expr::Status(status));
        }
        let function = match name.to_ascii_lowercase().as_str() {
            "contains" => Function::Contains,
            "startswith" => Function::StartsWith,
            "endswith" => Function::EndsWith,
            _ => {
                return Err(format!(
                    "function `{name}(…)` is not supported in a step's `if` (supported: success(), failure(), always(), cancelled(), contains, startsWith, endsWith)"
                ));
            }
        };
        let mut arguments = vec![self.nested(Self::or)?];
        while self.eat(",") {
            arguments.push(self.nested(Self::or)?);
        }
        if !self.eat(")") {
            return Err(self.error(&format!("`)` closing `{name}(` is missing")));
        }
        if arguments.len() != 2 {
            return Err(format!(
                "`{name}` takes two arguments, not {}",
                arguments.len()
            ));
        }
        Ok(Expr::Call(function, arguments))
    }

    fn path(&self, word: &str) -> Result<Expr, String> {
        let parts: Vec<&str> = word.split('.').collect();
        let scope = self.scope;
        let expr = match parts.as_slice() {
            ["true"] => Expr::Known(Known::Bool(true)),
            ["false"] => Expr::Known(Known::Bool(false)),
            ["null"] => Expr::Known(Known::Null),
            ["steps", step, "outputs", key] => Expr::Word(output_reader_quoted(step, key)),
            ["steps", step, field @ ("outcome" | "conclusion")] => Expr::Word(format!(
                "\"$(cat {} 2>/dev/null)\"",
                outcome_file(step, field)
            )),
            ["needs", job, "outputs", key] => {
                let id = super::expressions::output_id(scope, job)?;
                Expr::Word(format!(
                    "\"${{{}:-}}\"",
                    crate::pipeline::dependency_output_variable(id, key)
                ))
            }
            ["matrix", key] => match scope.matrix.get(*key) {
                Some(value) => Expr::Known(Known::Text(value.clone())),
                None => {
                    return Err(format!(
                        "`matrix.{key}` is not in the matrix of job `{}`",
                        scope.job
                    ));
                }
            },
            ["env", name]
                if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                Expr::Word(format!("\"${{{name}:-}}\""))
            }
            ["github", "sha"] => Expr::Word("\"${CAIRN_COMMIT:-}\"".to_owned()),
            ["github", "ref_name"] => Expr::Word("\"${CAIRN_BRANCH:-}\"".to_owned()),
            ["github", "ref"] => Expr::Word("\"refs/heads/${CAIRN_BRANCH:-}\"".to_owned()),
            ["github", "event_name"] => Expr::Known(Known::Text("push".to_owned())),
            ["runner", "os"] => Expr::Known(Known::Text("Linux".to_owned())),
            _ => {
                return Err(format!(
                    "`{word}` is not supported in a step's `if` (supported: steps.<id>.outputs.<name>, steps.<id>.outcome, steps.<id>.conclusion, needs.<job>.outputs.<name>, matrix.<name>, env.<NAME>, github.sha, github.ref, github.ref_name, github.event_name, runner.os)"
                ));
            }
        };
        Ok(expr)
    }
}

fn status(status: Status) -> String {
    match status {
        Status::Success => "[ \"$cairn_job\" = success ]".to_owned(),
        Status::Failure => "[ \"$cairn_job\" = failure ]".to_owned(),
        Status::Always => "true".to_owned(),
        // A job is never cancelled midway by its own script: a cancelled run kills it.
        Status::Cancelled => "false".to_owned(),
    }
}

/// The expression as a command list that succeeds when it is true.
fn condition(expr: &Expr) -> String {
    match expr {
        Expr::Known(known) => if truthy(known) { "true" } else { "false" }.to_owned(),
        Expr::Word(word) => format!("[ -n {word} ]"),
        Expr::Status(s) => status(*s),
        Expr::Call(function, arguments) => {
            let helper = match function {
                Function::Contains => "cairn_contains",
                Function::StartsWith => "cairn_starts_with",
                Function::EndsWith => "cairn_ends_with",
            };
            let words: Vec<String> = arguments.iter().map(word).collect();
            format!("{helper} {}", words.join(" "))
        }
        Expr::Not(inner) => format!("! {{ {}; }}", condition(inner)),
        Expr::And(left, right) => {
            format!("{{ {}; }} && {{ {}; }}", condition(left), condition(right))
        }
        Expr::Or(left, right) => {
            format!("{{ {}; }} || {{ {}; }}", condition(left), condition(right))
        }
        Expr::Equal(equal, left, right) => {
            let test = format!("cairn_equal {} {}", word(left), word(right));
            if *equal { test } else { format!("! {test}") }
        }
    }
}

/// The expression as one shell word: its text (a condition's is `true` or `false`).
fn word(expr: &Expr) -> String {
    match expr {
        Expr::Known(Known::Null) => "''".to_owned(),
        Expr::Known(Known::Bool(b)) => b.to_string(),
        Expr::Known(Known::Number(n)) => format_number(*n),
        Expr::Known(Known::Text(text)) => shell_quote(text),
        Expr::Word(word) => word.clone(),
        other => format!(
            "\"$(if {}; then echo true; else echo false; fi)\"",
            condition(other)
        ),
    }
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn truthy(known: &Known) -> bool {
    match known {
        Known::Null => false,
        Known::Bool(b) => *b,
        Known::Number(n) => *n != 0.0,
        Known::Text(text) => !text.is_empty(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn with_scope<T>(test: impl FnOnce(&Scope<'_>) -> T) -> T {
        let matrix = BTreeMap::from([("os".to_owned(), "Linux".to_owned())]);
        let ids = BTreeMap::from([("analyze", vec!["analyze".to_owned()])]);
        let needs = vec!["analyze".to_owned()];
        test(&Scope {
            job: "build",
            matrix: &matrix,
            ids: &ids,
            needs: &needs,
        })
    }

    /// Runs the condition in `sh` with the script's helpers and the given job state.
    fn holds(text: &str, job: &str, setup: &str) -> bool {
        let shell = with_scope(|scope| step_condition(text, scope)).unwrap();
        let script = format!(
            "{}\ncairn_job={job}\n{setup}\nif {shell}; then echo yes; else echo no; fi",
            super::super::script::helpers()
        );
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(output.status.success(), "{script}\n{output:?}");
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    }

    #[test]
    fn status_functions_follow_the_job() {
        assert!(holds("success()", "success", ""));
        assert!(!holds("success()", "failure", ""));
        assert!(holds("failure()", "failure", ""));
        assert!(holds("${{ always() }}", "failure", ""));
        assert!(!holds("cancelled()", "success", ""));
        // Without a status function, `success()` is implied.
        assert!(!holds("true", "failure", ""));
        assert!(holds("failure() || matrix.os == 'linux'", "success", ""));
    }

    #[test]
    fn compares_text_without_regard_to_case_and_reads_the_environment() {
        assert!(holds("matrix.os == 'linux'", "success", ""));
        assert!(holds("env.MODE != 'fast'", "success", "MODE=slow"));
        assert!(!holds("env.MODE", "success", ""));
        assert!(holds("env.MODE", "success", "MODE=x"));
        assert!(holds(
            "startsWith(github.ref, 'refs/heads/rel') && !endsWith(env.MODE, 'x')",
            "success",
            "CAIRN_BRANCH=release/1; MODE=y"
        ));
        assert!(holds(
            "contains(env.LIST, 'B') && 1 == 1.0",
            "success",
            "LIST='a b c'"
        ));
        assert!(holds("'it''s' == 'IT''S'", "success", ""));
    }

    #[test]
    fn mistakes_are_errors_with_their_place() {
        let error = with_scope(|scope| step_condition("success() &&", scope)).unwrap_err();
        assert!(error.contains("a value is missing"), "{error}");
        let error = with_scope(|scope| step_condition("hashFiles('x')", scope)).unwrap_err();
        assert!(error.contains("`hashFiles(…)` is not supported"), "{error}");
        let error = with_scope(|scope| step_condition("secrets.X == 'y'", scope)).unwrap_err();
        assert!(error.contains("`secrets.X` is not supported"), "{error}");
        let error = with_scope(|scope| step_condition("env.A == 'b' x", scope)).unwrap_err();
        assert!(error.contains("unexpected text at character 14"), "{error}");
        let deep = format!("{}true{}", "(".repeat(100), ")".repeat(100));
        let error = with_scope(|scope| step_condition(&deep, scope)).unwrap_err();
        assert!(error.contains("nests too deeply"), "{error}");
    }
}
