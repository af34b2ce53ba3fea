//! The deterministic risk floor: each rule that fires names its reason and a score.
//!
//! The level is the highest any rule reaches. Language models may later raise it and add
//! reasons, never lower it (see `ARCHITECTURE.md`, "Risk and routing"); nothing a commit
//! message says can change what these rules see: they read paths, counts and the changed
//! lines themselves (`detect.rs`), never the message, and a comment is never taken for a
//! reason to score lower.

use serde::Serialize;

use super::classify::{Category, ChangeSummary};
use super::diff::ChangedFile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Low,
    Medium,
    High,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
        }
    }

    fn of_score(score: u32) -> Level {
        match score {
            0..=34 => Level::Low,
            35..=69 => Level::Medium,
            _ => Level::High,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    pub rule: &'static str,
    pub score: u32,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Assessment {
    pub level: Level,
    pub score: u32,
    pub reasons: Vec<Reason>,
    /// The rules alone are sure (docs-only, typo-sized): no model needs to be asked.
    pub certain: bool,
}

/// Lines changed above which a diff is large enough to be risky on its own.
const LARGE_DIFF: u64 = 500;
const HUGE_DIFF: u64 = 2_000;

/// Scores a change from its files' categories, its size and the reasons the content detectors
/// found in its lines (`content`).
pub fn assess(
    files: &[ChangedFile],
    per_file: &[Category],
    change: &ChangeSummary,
    content: Vec<Reason>,
) -> Assessment {
    let from_content = !content.is_empty();
    let mut reasons = content;
    let mut add = |rule: &'static str, score: u32, detail: String| {
        reasons.push(Reason {
            rule,
            score,
            detail,
        });
    };
    let paths_in = |category: Category| -> Vec<&str> {
        files
            .iter()
            .zip(per_file)
            .filter(|(_, c)| **c == category)
            .map(|(f, _)| f.path.as_str())
            .collect()
    };
    let list = |paths: Vec<&str>| -> String {
        let shown: Vec<&str> = paths.iter().take(3).copied().collect();
        let more = paths.len().saturating_sub(shown.len());
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    };

    if files.is_empty() {
        add("empty", 0, "the commit changes no files".into());
    } else if change.typo {
        add(
            "typo",
            2,
            format!(
                "a typo-sized documentation change ({} lines)",
                change.additions + change.deletions
            ),
        );
    } else if change.only_docs {
        add("docs_only", 5, "only documentation changed".into());
    } else if change.only_tests {
        add(
            "tests_only",
            15,
            format!("only tests changed: {}", list(paths_in(Category::Tests))),
        );
    }
    for (category, rule, score, what) in [
        (
            Category::Migration,
            "database_migration",
            85,
            "database migration",
        ),
        (
            Category::Security,
            "security_code",
            80,
            "authentication or security code",
        ),
        (
            Category::Dependencies,
            "dependencies",
            72,
            "dependency manifest or lockfile",
        ),
        (
            Category::Infrastructure,
            "infrastructure",
            72,
            "build, CI or infrastructure definition",
        ),
        (Category::Config, "configuration", 45, "configuration"),
        (Category::Code, "application_code", 40, "application code"),
        (Category::Binary, "binary_files", 40, "binary file"),
        (
            Category::Release,
            "release_version",
            20,
            "only the package's own version field",
        ),
        (
            Category::Comments,
            "comments_only",
            5,
            "only comments in code",
        ),
        (
            Category::Tooling,
            "tooling",
            15,
            "development tool settings (linters, formatters, bots)",
        ),
        (Category::Other, "unknown_files", 40, "file of unknown type"),
    ] {
        let paths = paths_in(category);
        if !paths.is_empty() {
            add(rule, score, format!("{what} changed: {}", list(paths)));
        }
    }
    // Size counts what runs: documentation and comments, however long, are not risky code.
    let lines: u64 = files
        .iter()
        .zip(per_file)
        .filter(|(_, c)| {
            !matches!(
                c,
                Category::Docs | Category::Comments | Category::Release | Category::Tooling
            )
        })
        .map(|(f, _)| f.additions + f.deletions)
        .sum();
    if lines > HUGE_DIFF {
        add(
            "huge_diff",
            75,
            format!("{lines} lines changed (over {HUGE_DIFF})"),
        );
    } else if lines > LARGE_DIFF {
        add(
            "large_diff",
            50,
            format!("{lines} lines changed (over {LARGE_DIFF})"),
        );
    }
    let deleted_code = files
        .iter()
        .zip(per_file)
        .filter(|(f, c)| f.status == "deleted" && **c == Category::Code)
        .count();
    if deleted_code > 0 {
        add(
            "deleted_code",
            45,
            format!("{deleted_code} source files deleted"),
        );
    }

    let top = reasons.iter().map(|r| r.score).max().unwrap_or(0);
    // Each further reason above low adds a little: three medium reasons are riskier than one.
    let extra = reasons
        .iter()
        .filter(|r| r.score >= 35)
        .count()
        .saturating_sub(1) as u32
        * 3;
    let score = (top + extra).min(100);
    let certain = (change.only_docs || files.is_empty()) && !from_content;
    reasons.sort_by_key(|r| std::cmp::Reverse(r.score));
    Assessment {
        level: Level::of_score(score),
        score,
        reasons,
        certain,
    }
}
