//! `when:` conditions: a small expression language over the run context, parsed once at load
//! time so a typo fails `cairn validate` instead of silently skipping a deploy.
//!
//! ```text
//! condition  := or
//! or         := and (("||" | "or") and)*
//! and        := unary (("&&" | "and") unary)*
//! unary      := ("!" | "not") unary | comparison
//! comparison := primary (("==" | "!=" | "<" | "<=" | ">" | ">=") primary)?
//! primary    := number | 'string' | "string" | true | false | null
//!             | low | medium | high | path | "(" or ")"
//! path       := name ("." name)*        e.g. risk, change.only_docs, steps.analyze.risk
//! ```
//!
//! Comparisons do not chain (`a < b < c` is an error, not a surprise). Evaluation lives in
//! [`super::evaluate`]; which path roots exist is [`ROOTS`].

use std::fmt;

/// The variables a condition may start from: what the executor puts in the run context.
pub const ROOTS: &[&str] = &[
    "risk", "change", "steps", "commit", "branch", "repo", "trigger", "env", "outputs",
];

/// Deeper nesting than this is refused instead of risking the parser's stack.
const MAX_DEPTH: usize = 64;

/// More `&&`/`||` terms than this is refused: a chain builds a tree as deep as it is long, and
/// evaluating or dropping that tree recurses once per term.
const MAX_TERMS: usize = 256;

/// A parsed `when:` condition; compares equal when the parsed expressions are equal.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    source: String,
    pub(super) expr: Expr,
}

/// Why a condition text does not parse, or names an unknown variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {})", .offset + 1)]
pub struct ConditionError {
    /// Byte offset into the condition text of the offending token.
    pub offset: usize,
    pub message: String,
}

/// The risk levels, usable as bare words; ordered by rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

impl RiskLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }

    /// Accepts any letter case and surrounding blanks, because the value usually comes from
    /// an agent's output rather than from the workflow author.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" => Some(Self::High),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
    Literal(Literal),
    /// A dotted path into the context; `offset` is where it starts in the source.
    Path {
        segments: Vec<String>,
        offset: usize,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(CompareOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Literal {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Risk(RiskLevel),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CompareOp {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl CompareOp {
    fn symbol(self) -> &'static str {
        match self {
            Self::Equal => "==",
            Self::NotEqual => "!=",
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
        }
    }
}

impl Condition {
    /// Parses a condition. Any path root is accepted here; [`Condition::check_roots`] says
    /// whether they are ones the executor provides.
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let tokens = tokenize(text)?;
        let operators = tokens
            .iter()
            .filter(|token| matches!(token.kind, TokenKind::And | TokenKind::Or))
            .count();
        if operators >= MAX_TERMS {
            return Err(ConditionError {
                offset: 0,
                message: format!(
                    "the condition joins {} terms with `&&`/`||`; at most {MAX_TERMS} are allowed",
                    operators + 1
                ),
            });
        }
        let mut parser = Parser {
            tokens: &tokens,
            position: 0,
            end: text.len(),
            depth: 0,
        };
        let expr = parser.or()?;
        if let Some(token) = parser.peek() {
            let message = match token.kind {
                TokenKind::Compare(op) => format!(
                    "comparisons cannot be chained; add parentheses or `&&` before `{}`",
                    op.symbol()
                ),
                _ => format!("unexpected {} after the end of the condition", token.kind),
            };
            return Err(ConditionError {
                offset: token.offset,
                message,
            });
        }
        Ok(Condition {
            source: text.to_owned(),
            expr,
        })
    }

    /// The text the condition was parsed from, as written in the workflow file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every path used, as (offset in the source, segments).
    pub fn paths(&self) -> Vec<(usize, &[String])> {
        fn walk<'a>(expr: &'a Expr, found: &mut Vec<(usize, &'a [String])>) {
            match expr {
                Expr::Literal(_) => {}
                Expr::Path { segments, offset } => found.push((*offset, segments)),
                Expr::Not(inner) => walk(inner, found),
                Expr::And(left, right) | Expr::Or(left, right) | Expr::Compare(_, left, right) => {
                    walk(left, found);
                    walk(right, found);
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.expr, &mut found);
        found
    }

    /// Errors for every path whose first name is not one of [`ROOTS`].
    pub fn check_roots(&self) -> Vec<ConditionError> {
        self.paths()
            .into_iter()
            .filter_map(|(offset, segments)| {
                let root = segments.first()?;
                if ROOTS.contains(&root.as_str()) {
                    return None;
                }
                // A lone misspelt word is as likely a literal (`meduim`) as a variable.
                let literals: &[&str] = if segments.len() == 1 {
                    &["low", "medium", "high", "true", "false", "null"]
                } else {
                    &[]
                };
                Some(ConditionError {
                    offset,
                    message: format!(
                        "unknown variable `{root}`; expected one of: {}{}",
                        ROOTS.join(", "),
                        super::suggest::did_you_mean(root, ROOTS.iter().chain(literals).copied())
                    ),
                })
            })
            .collect()
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Number(f64),
    String(String),
    /// A bare word or dotted path, split on dots.
    Name(Vec<String>),
    Compare(CompareOp),
    Not,
    And,
    Or,
    OpenParen,
    CloseParen,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(number) => write!(f, "number `{number}`"),
            Self::String(text) => write!(f, "string '{text}'"),
            Self::Name(segments) => write!(f, "`{}`", segments.join(".")),
            Self::Compare(op) => write!(f, "`{}`", op.symbol()),
            Self::Not => f.write_str("`!`"),
            Self::And => f.write_str("`&&`"),
            Self::Or => f.write_str("`||`"),
            Self::OpenParen => f.write_str("`(`"),
            Self::CloseParen => f.write_str("`)`"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: TokenKind,
    offset: usize,
}

fn is_name_start(character: char) -> bool {
    character.is_ascii_alphabetic() || character == '_'
}

/// Hyphens are allowed inside names because step ids contain them (`steps.test-extra.status`);
/// the language has no subtraction, so there is no ambiguity.
fn is_name_continue(character: char) -> bool {
    character.is_ascii_alphanumeric() || character == '_' || character == '-'
}

fn tokenize(text: &str) -> Result<Vec<Token>, ConditionError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    let error = |offset: usize, message: String| ConditionError { offset, message };
    while let Some(&(offset, character)) = chars.peek() {
        if character.is_whitespace() {
            chars.next();
            continue;
        }
        let two = |second: char| {
            let mut lookahead = text[offset..].chars();
            lookahead.next();
            lookahead.next() == Some(second)
        };
        let (kind, length) = match character {
            '(' => (TokenKind::OpenParen, 1),
            ')' => (TokenKind::CloseParen, 1),
            '=' if two('=') => (TokenKind::Compare(CompareOp::Equal), 2),
            '=' => {
                return Err(error(
                    offset,
                    "`=` is not an operator; use `==` to compare".to_owned(),
                ));
            }
            '!' if two('=') => (TokenKind::Compare(CompareOp::NotEqual), 2),
            '!' => (TokenKind::Not, 1),
            '<' if two('=') => (TokenKind::Compare(CompareOp::LessOrEqual), 2),
            '<' => (TokenKind::Compare(CompareOp::Less), 1),
            '>' if two('=') => (TokenKind::Compare(CompareOp::GreaterOrEqual), 2),
            '>' => (TokenKind::Compare(CompareOp::Greater), 1),
            '&' if two('&') => (TokenKind::And, 2),
            '&' => {
                return Err(error(
                    offset,
                    "`&` is not an operator; use `&&` or `and`".to_owned(),
                ));
            }
            '|' if two('|') => (TokenKind::Or, 2),
            '|' => {
                return Err(error(
                    offset,
                    "`|` is not an operator; use `||` or `or`".to_owned(),
                ));
            }
            '\'' | '"' => {
                let (value, length) = read_string(text, offset, character)?;
                (TokenKind::String(value), length)
            }
            _ if character.is_ascii_digit() || character == '-' || character == '.' => {
                let length = text[offset..]
                    .find(|next: char| {
                        !(next.is_ascii_alphanumeric() || next == '.' || next == '-' || next == '+')
                    })
                    .unwrap_or(text.len() - offset);
                let literal = &text[offset..offset + length];
                let number = literal
                    .parse::<f64>()
                    .ok()
                    .filter(|number| {
                        number.is_finite() && !literal.contains(['e', 'E', 'i', 'I', 'n', 'N'])
                    })
                    .ok_or_else(|| error(offset, format!("invalid number `{literal}`")))?;
                (TokenKind::Number(number), length)
            }
            _ if is_name_start(character) => {
                let mut segments = Vec::new();
                let mut position = offset;
                loop {
                    let segment_length = text[position..]
                        .find(|next: char| !is_name_continue(next))
                        .unwrap_or(text.len() - position);
                    segments.push(text[position..position + segment_length].to_owned());
                    position += segment_length;
                    let rest = &text[position..];
                    if let Some(after) = rest.strip_prefix('.') {
                        let after_dot = after.chars().next();
                        if after_dot.is_some_and(is_name_continue) {
                            position += 1;
                            continue;
                        }
                        return Err(error(position, "expected a name after `.`".to_owned()));
                    }
                    break;
                }
                let kind = match segments.as_slice() {
                    [word] if word == "not" => TokenKind::Not,
                    [word] if word == "and" => TokenKind::And,
                    [word] if word == "or" => TokenKind::Or,
                    _ => TokenKind::Name(segments),
                };
                (kind, position - offset)
            }
            other => return Err(error(offset, format!("unexpected character `{other}`"))),
        };
        tokens.push(Token { kind, offset });
        // Every token is ASCII except string literals, whose length is in bytes too.
        while chars
            .peek()
            .is_some_and(|&(next, _)| next < offset + length)
        {
            chars.next();
        }
    }
    Ok(tokens)
}

/// Reads a quoted string starting at `start`; returns its value and length in bytes.
/// Backslash escapes the quote and the backslash itself; nothing else is special.
fn read_string(text: &str, start: usize, quote: char) -> Result<(String, usize), ConditionError> {
    let mut value = String::new();
    let mut escaped = false;
    for (index, character) in text[start + 1..].char_indices() {
        if escaped {
            value.push(character);
            escaped = false;
        } else if character == '\\' {
            escaped = true;
        } else if character == quote {
            return Ok((value, index + 2));
        } else {
            value.push(character);
        }
    }
    Err(ConditionError {
        offset: start,
        message: format!("unterminated string; add the closing {quote}"),
    })
}

struct Parser<'a> {
    tokens: &'a [Token],
    position: usize,
    /// Offset reported for "expected … at the end".
    end: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn advance_if(&mut self, kind: &TokenKind) -> bool {
        if self.peek().is_some_and(|token| token.kind == *kind) {
            self.position += 1;
            return true;
        }
        false
    }

    fn or(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.and()?;
        while self.advance_if(&TokenKind::Or) {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.unary()?;
        while self.advance_if(&TokenKind::And) {
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ConditionError> {
        if self.advance_if(&TokenKind::Not) {
            let inner = self.nested(Self::unary)?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ConditionError> {
        let left = self.primary()?;
        if let Some(Token {
            kind: TokenKind::Compare(op),
            ..
        }) = self.peek()
        {
            let op = *op;
            self.position += 1;
            let right = self.primary()?;
            return Ok(Expr::Compare(op, Box::new(left), Box::new(right)));
        }
        Ok(left)
    }

    /// Runs `parse` one level deeper, refusing pathological nesting.
    fn nested(
        &mut self,
        parse: fn(&mut Self) -> Result<Expr, ConditionError>,
    ) -> Result<Expr, ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let offset = self.peek().map_or(self.end, |token| token.offset);
            return Err(ConditionError {
                offset,
                message: format!("condition nests more than {MAX_DEPTH} levels deep"),
            });
        }
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn primary(&mut self) -> Result<Expr, ConditionError> {
        let Some(token) = self.peek().cloned() else {
            let message = match self.tokens.last() {
                None => "the condition is empty".to_owned(),
                Some(last) => format!("expected a value after {}", last.kind),
            };
            return Err(ConditionError {
                offset: self.end,
                message,
            });
        };
        self.position += 1;
        let expr = match token.kind {
            TokenKind::Number(number) => Expr::Literal(Literal::Number(number)),
            TokenKind::String(text) => Expr::Literal(Literal::String(text)),
            TokenKind::Name(segments) => match segments.as_slice() {
                [word] if word == "true" => Expr::Literal(Literal::Bool(true)),
                [word] if word == "false" => Expr::Literal(Literal::Bool(false)),
                [word] if word == "null" => Expr::Literal(Literal::Null),
                // Bare risk words are lowercase only, so a context key `High` stays reachable.
                [word] if word == "low" => Expr::Literal(Literal::Risk(RiskLevel::Low)),
                [word] if word == "medium" => Expr::Literal(Literal::Risk(RiskLevel::Medium)),
                [word] if word == "high" => Expr::Literal(Literal::Risk(RiskLevel::High)),
                _ => Expr::Path {
                    segments,
                    offset: token.offset,
                },
            },
            TokenKind::OpenParen => {
                let inner = self.nested(Self::or)?;
                if !self.advance_if(&TokenKind::CloseParen) {
                    let offset = self.peek().map_or(self.end, |next| next.offset);
                    return Err(ConditionError {
                        offset,
                        message: "expected `)` to close the `(`".to_owned(),
                    });
                }
                inner
            }
            other => {
                return Err(ConditionError {
                    offset: token.offset,
                    message: format!("expected a value, found {other}"),
                });
            }
        };
        Ok(expr)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    fn path(segments: &[&str], offset: usize) -> Expr {
        Expr::Path {
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            offset,
        }
    }

    #[test]
    fn parses_precedence() {
        let condition = Condition::parse("a || b && !c").unwrap();
        assert_eq!(
            condition.expr,
            Expr::Or(
                Box::new(path(&["a"], 0)),
                Box::new(Expr::And(
                    Box::new(path(&["b"], 5)),
                    Box::new(Expr::Not(Box::new(path(&["c"], 11))))
                ))
            )
        );
        assert_eq!(
            Condition::parse("a or b and not c").unwrap().expr,
            Expr::Or(
                Box::new(path(&["a"], 0)),
                Box::new(Expr::And(
                    Box::new(path(&["b"], 5)),
                    Box::new(Expr::Not(Box::new(path(&["c"], 15))))
                ))
            )
        );
    }

    #[test]
    fn parses_literals_and_comparisons() {
        let condition = Condition::parse("risk >= medium").unwrap();
        assert_eq!(
            condition.expr,
            Expr::Compare(
                CompareOp::GreaterOrEqual,
                Box::new(path(&["risk"], 0)),
                Box::new(Expr::Literal(Literal::Risk(RiskLevel::Medium)))
            )
        );
        assert_eq!(condition.source(), "risk >= medium");
        let condition = Condition::parse("steps.test-extra.count != -1.5").unwrap();
        assert_eq!(
            condition.expr,
            Expr::Compare(
                CompareOp::NotEqual,
                Box::new(path(&["steps", "test-extra", "count"], 0)),
                Box::new(Expr::Literal(Literal::Number(-1.5)))
            )
        );
        let condition =
            Condition::parse(r#"(branch == "main") && commit.author != 'a\'b'"#).unwrap();
        assert!(matches!(condition.expr, Expr::And(..)));
        assert_eq!(
            Condition::parse("null").unwrap().expr,
            Expr::Literal(Literal::Null)
        );
        assert_eq!(
            Condition::parse("true").unwrap().expr,
            Expr::Literal(Literal::Bool(true))
        );
    }

    #[test]
    fn reports_syntax_errors_with_offsets() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "the condition is empty"),
            ("risk >=", 7, "expected a value after `>=`"),
            ("risk = high", 5, "use `==`"),
            ("(risk == high", 13, "expected `)`"),
            ("risk == high)", 12, "unexpected `)`"),
            ("a < b < c", 6, "cannot be chained"),
            ("risk == 'high", 8, "unterminated string"),
            ("risk # high", 5, "unexpected character `#`"),
            ("change. only", 6, "expected a name after `.`"),
            ("1.2.3 == a", 0, "invalid number"),
            ("a && && b", 5, "expected a value, found `&&`"),
        ];
        for (text, offset, message) in cases {
            let error = Condition::parse(text).unwrap_err();
            assert_eq!(error.offset, *offset, "{text:?}: {error}");
            assert!(error.message.contains(message), "{text:?}: {error}");
        }
    }

    #[test]
    fn refuses_long_chains_without_overflowing() {
        let text = vec!["risk == high"; 100_000].join(" || ");
        let error = Condition::parse(&text).unwrap_err();
        assert!(error.message.contains("at most 256"), "{}", error.message);
        assert!(Condition::parse(&vec!["risk == high"; 200].join(" && ")).is_ok());
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing() {
        let deep = format!("{}risk{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(Condition::parse(&deep).is_err());
        let nots = format!("{}risk", "!".repeat(10_000));
        assert!(Condition::parse(&nots).is_err());
        assert!(Condition::parse(&format!("{}risk{}", "(".repeat(20), ")".repeat(20))).is_ok());
    }

    #[test]
    fn checks_roots() {
        let condition = Condition::parse("risk == high || rsk == low").unwrap();
        let errors = condition.check_roots();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].offset, 16);
        assert!(
            errors[0].message.contains("did you mean `risk`?"),
            "{}",
            errors[0]
        );
    }
}
