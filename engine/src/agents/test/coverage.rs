//! Coverage gaps: the lines a commit added that no test ran, per file, where a coverage tool
//! is available — coverage.py (`python3 -m coverage`) for Python runners, `cargo llvm-cov` for
//! cargo. Both write LCOV, which is all that is read. A missing tool is reported once in the
//! outputs, not an error.
//!
//! The measured run is a second pass of the same (narrowed) command under the tool, so the
//! results the pipeline acts on never depend on the instrumentation.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};

use super::files::{Hunk, added_lines};

/// Per file (relative to the repository), hits per instrumented line.
pub type Lcov = BTreeMap<String, BTreeMap<u32, u64>>;

/// Per file, the executed-or-not state of each instrumented line.
pub fn parse_lcov(text: &str, root: &Path) -> Lcov {
    let mut files: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("SF:") {
            let path = Path::new(path.trim());
            let relative = path.strip_prefix(root).unwrap_or(path);
            current = Some(
                relative
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_string(),
            );
        } else if let (Some(file), Some(data)) = (&current, line.strip_prefix("DA:")) {
            let mut parts = data.split(',');
            let number = parts.next().and_then(|n| n.trim().parse().ok());
            let hits = parts.next().and_then(|n| n.trim().parse::<f64>().ok());
            if let (Some(number), Some(hits)) = (number, hits) {
                let entry = files
                    .entry(file.clone())
                    .or_default()
                    .entry(number)
                    .or_insert(0);
                *entry = (*entry).max(hits as u64);
            }
        } else if line.trim() == "end_of_record" {
            current = None;
        }
    }
    files
}

/// Added lines that are instrumented and were never executed, per file.
pub fn gaps(changed: &BTreeMap<String, Vec<Hunk>>, lcov: &Lcov) -> BTreeMap<String, Vec<u32>> {
    changed
        .iter()
        .filter_map(|(file, hunks)| {
            let lines = lcov.get(file)?;
            let missed: Vec<u32> = added_lines(hunks)
                .into_iter()
                .filter(|n| lines.get(n) == Some(&0))
                .collect();
            (!missed.is_empty()).then(|| (file.clone(), missed))
        })
        .collect()
}

/// `3, 5-7, 10` from sorted line numbers.
pub fn ranges(lines: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = lines.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(", ")
}

/// The command that runs `command` under a coverage tool writing LCOV to `lcov`, or why there
/// is none.
pub async fn instrumented(command: &str, lcov: &Path, data: &Path) -> Result<Vec<String>, String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let lcov = lcov.to_string_lossy();
    let data = data.to_string_lossy();
    match words.first().copied() {
        Some("python3" | "python" | "pytest") => {
            if !succeeds("python3 -m coverage --version").await {
                return Err(
                    "coverage.py is not installed (python3 -m coverage); no coverage gaps reported"
                        .into(),
                );
            }
            let rest = if words[0] == "pytest" {
                format!("-m {command}")
            } else {
                words[1..].join(" ")
            };
            Ok(vec![
                format!("python3 -m coverage run --data-file={data} --source=. {rest}"),
                format!("python3 -m coverage lcov --data-file={data} -o {lcov}"),
            ])
        }
        Some("cargo") if words.get(1) == Some(&"test") => {
            if !succeeds("cargo llvm-cov --version").await {
                return Err("cargo-llvm-cov is not installed; no coverage gaps reported".into());
            }
            let rest = words[2..].join(" ");
            Ok(vec![format!(
                "cargo llvm-cov {rest} --lcov --output-path {lcov}"
            )])
        }
        _ => Err(format!(
            "no coverage tool knows how to run `{command}`; no coverage gaps reported"
        )),
    }
}

async fn succeeds(command: &str) -> bool {
    tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// The outputs' `coverage` value for measured gaps.
pub fn report(gaps: &BTreeMap<String, Vec<u32>>, tool: &str) -> Value {
    let files: BTreeMap<&String, Value> = gaps
        .iter()
        .map(|(file, lines)| (file, json!({ "lines": lines, "ranges": ranges(lines) })))
        .collect();
    json!({ "tool": tool, "uncovered_changed_lines": gaps.values().map(Vec::len).sum::<usize>(), "files": files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncovered_added_lines_are_found_per_file() {
        let lcov = "SF:/repo/src/pay.py\nDA:1,1\nDA:2,1\nDA:5,0\nDA:6,0\nDA:7,3\nend_of_record\nSF:src/other.py\nDA:1,0\nend_of_record\n";
        let measured = parse_lcov(lcov, Path::new("/repo"));
        assert_eq!(
            measured.keys().collect::<Vec<_>>(),
            ["src/other.py", "src/pay.py"]
        );
        let changed = BTreeMap::from([
            ("src/pay.py".to_string(), vec![Hunk { start: 2, count: 5 }]),
            (
                "src/unmeasured.py".to_string(),
                vec![Hunk { start: 1, count: 1 }],
            ),
        ]);
        let found = gaps(&changed, &measured);
        assert_eq!(
            found,
            BTreeMap::from([("src/pay.py".to_string(), vec![5, 6])]),
            "line 3-4 are not code, 7 ran"
        );
        assert_eq!(ranges(&[3, 5, 6, 7, 10]), "3, 5-7, 10");
        assert_eq!(
            report(&found, "coverage.py")["files"]["src/pay.py"]["ranges"],
            "5-6"
        );
    }
}
