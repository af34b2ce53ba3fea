//! Change features of each commit for just-in-time defect prediction (Kamei et al., 2013):
//! size, spread, the touched files' past and the author's experience, plus Cairn's own rule
//! floor. Computed in one pass over the history, oldest first, each commit from what came
//! before it only — so a past commit's row is exactly what `cairn analyze` would have seen.

use std::collections::{HashMap, HashSet};

use super::log::Commit;
use super::szz::is_fix;
use crate::agents::orchestrator::{ChangedFile, Level, floor_from_paths};

/// Feature names, in the order of [`Row::raw`]; stored with a model so a model fitted by
/// another build is refused rather than misread.
pub const NAMES: [&str; COUNT] = [
    "lines_added",
    "lines_deleted",
    "files",
    "directories",
    "subsystems",
    "entropy",
    "new_files",
    "lines_before",
    "file_age_days",
    "prior_changes",
    "past_fixes",
    "developers",
    "author_experience",
    "author_subsystem_experience",
    "is_fix",
    "rule_floor",
];
pub const COUNT: usize = 16;

/// Features that are counts or durations, skewed over orders of magnitude: they enter the
/// model as `ln(1 + x)`, as in the literature, so one huge commit does not dominate.
const LOGGED: [bool; COUNT] = [
    true, true, true, true, true, false, true, true, true, true, true, true, true, true, false,
    false,
];

#[derive(Debug, Clone)]
pub struct Row {
    pub commit: String,
    pub time: i64,
    /// Values as measured (lines, days, commits), for showing.
    pub raw: [f64; COUNT],
}

impl Row {
    /// The values the model reads (counts log-transformed).
    pub fn transformed(&self) -> [f64; COUNT] {
        let mut out = self.raw;
        for (value, logged) in out.iter_mut().zip(LOGGED) {
            if logged {
                *value = value.max(0.0).ln_1p();
            }
        }
        out
    }
}

#[derive(Default)]
struct FileState {
    last_time: i64,
    changes: u32,
    fixes: u32,
    authors: HashSet<String>,
    lines: i64,
}

fn subsystem(path: &str) -> &str {
    path.split_once('/').map_or("", |(top, _)| top)
}

fn directory(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// One row per commit of `commits` (oldest first), each from the history before it.
pub fn rows(commits: &[Commit]) -> Vec<Row> {
    let mut files: HashMap<String, FileState> = HashMap::new();
    let mut authors: HashMap<String, u32> = HashMap::new();
    let mut author_subsystems: HashMap<(String, String), u32> = HashMap::new();
    let mut out = Vec::with_capacity(commits.len());
    for commit in commits {
        let fix = is_fix(&commit.message);
        out.push(row(commit, fix, &files, &authors, &author_subsystems));
        *authors.entry(commit.author.clone()).or_default() += 1;
        let subsystems: HashSet<&str> = commit.files.iter().map(|f| subsystem(&f.path)).collect();
        for name in subsystems {
            *author_subsystems
                .entry((commit.author.clone(), name.to_string()))
                .or_default() += 1;
        }
        for file in &commit.files {
            if file.status == "deleted" {
                files.remove(&file.path);
                continue;
            }
            let state = files.entry(file.path.clone()).or_default();
            state.last_time = commit.time;
            state.changes += 1;
            state.fixes += u32::from(fix);
            state.authors.insert(commit.author.clone());
            state.lines += file.additions as i64 - file.deletions as i64;
        }
    }
    out
}

fn row(
    commit: &Commit,
    fix: bool,
    files: &HashMap<String, FileState>,
    authors: &HashMap<String, u32>,
    author_subsystems: &HashMap<(String, String), u32>,
) -> Row {
    let changed = &commit.files;
    let added: u64 = changed.iter().map(|f| f.additions).sum();
    let deleted: u64 = changed.iter().map(|f| f.deletions).sum();
    let directories: HashSet<&str> = changed.iter().map(|f| directory(&f.path)).collect();
    let subsystems: HashSet<&str> = changed.iter().map(|f| subsystem(&f.path)).collect();
    let total = (added + deleted) as f64;
    // How evenly the change is spread over its files, in bits (0 for one file).
    let entropy = if total > 0.0 {
        changed
            .iter()
            .map(|f| (f.additions + f.deletions) as f64 / total)
            .filter(|p| *p > 0.0)
            .map(|p| -p * p.log2())
            .sum()
    } else {
        0.0
    };
    let known: Vec<&FileState> = changed.iter().filter_map(|f| files.get(&f.path)).collect();
    let mean = |values: Vec<f64>| {
        if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        }
    };
    let lines_before = mean(known.iter().map(|s| s.lines.max(0) as f64).collect());
    let age_days = mean(
        known
            .iter()
            .map(|s| ((commit.time - s.last_time).max(0) as f64) / 86_400.0)
            .collect(),
    );
    let developers: HashSet<&String> = known.iter().flat_map(|s| s.authors.iter()).collect();
    let subsystem_experience: u32 = subsystems
        .iter()
        .map(|name| {
            author_subsystems
                .get(&(commit.author.clone(), (*name).to_string()))
                .copied()
                .unwrap_or(0)
        })
        .sum();
    let floor = floor_from_paths(
        &changed
            .iter()
            .map(|f| ChangedFile {
                path: f.path.clone(),
                old_path: None,
                status: f.status,
                additions: f.additions,
                deletions: f.deletions,
                binary: f.binary,
            })
            .collect::<Vec<_>>(),
    );
    Row {
        commit: commit.id.clone(),
        time: commit.time,
        raw: [
            added as f64,
            deleted as f64,
            changed.len() as f64,
            directories.len() as f64,
            subsystems.len() as f64,
            entropy,
            changed.iter().filter(|f| f.status == "added").count() as f64,
            lines_before,
            age_days,
            known.iter().map(|s| f64::from(s.changes)).sum(),
            known.iter().map(|s| f64::from(s.fixes)).sum(),
            developers.len() as f64,
            f64::from(authors.get(&commit.author).copied().unwrap_or(0)),
            f64::from(subsystem_experience),
            f64::from(u8::from(fix)),
            level_number(floor.level),
        ],
    }
}

/// The rule floor as a number the model can weigh: low 0, medium 1, high 2.
pub fn level_number(level: Level) -> f64 {
    match level {
        Level::Low => 0.0,
        Level::Medium => 1.0,
        Level::High => 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::orchestrator::history::log::FileChange;

    fn commit(id: &str, author: &str, time: i64, message: &str, files: &[(&str, u64)]) -> Commit {
        Commit {
            id: id.repeat(40),
            author: author.into(),
            time,
            message: message.into(),
            files: files
                .iter()
                .map(|(path, added)| FileChange {
                    path: (*path).into(),
                    additions: *added,
                    deletions: 0,
                    binary: false,
                    status: "modified",
                })
                .collect(),
        }
    }

    #[test]
    fn each_row_sees_only_the_history_before_it() {
        let day = 86_400;
        let commits = [
            commit("a", "ann", 0, "add", &[("src/a.rs", 10)]),
            commit("b", "bob", day, "fix a bug", &[("src/a.rs", 2)]),
            commit(
                "c",
                "ann",
                3 * day,
                "more",
                &[("src/a.rs", 5), ("lib/b.rs", 5)],
            ),
        ];
        let rows = rows(&commits);
        let at = |row: usize, name: &str| {
            let index = NAMES.iter().position(|n| *n == name).expect("a feature");
            rows[row].raw[index]
        };
        assert_eq!(at(0, "prior_changes"), 0.0);
        assert_eq!(at(0, "author_experience"), 0.0);
        assert_eq!(at(1, "is_fix"), 1.0);
        assert_eq!(at(1, "lines_before"), 10.0);
        assert_eq!(at(2, "prior_changes"), 2.0);
        assert_eq!(at(2, "past_fixes"), 1.0);
        assert_eq!(at(2, "developers"), 2.0);
        assert_eq!(at(2, "author_experience"), 1.0);
        assert_eq!(
            at(2, "file_age_days"),
            2.0,
            "a.rs changed 2 days before; new b.rs has no age"
        );
        assert_eq!(at(2, "subsystems"), 2.0);
        assert_eq!(at(2, "entropy"), 1.0, "two files, evenly");
    }
}
