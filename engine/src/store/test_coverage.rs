//! Per-test coverage for test selection: for each test file of a repository, the lines of
//! every source file its tests executed in the newest coverage run that ran it, and the commit
//! of that run. Selection trusts a record only where nothing it depends on changed since
//! (`agents/test/per_test.rs`); a test file with no record is unknown, and runs.

use std::collections::BTreeMap;

use super::error::Result;
use super::runs::WriteTxn;
use super::sqlite::{Store, now_ms};

/// What one test file executed, at one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCoverage {
    pub test_file: String,
    pub commit_id: String,
    /// Source file → executed line numbers, ascending.
    pub lines: BTreeMap<String, Vec<u32>>,
}

/// `1-3,7` from ascending line numbers.
fn encode(lines: &[u32]) -> String {
    let mut parts = Vec::new();
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
    parts.join(",")
}

/// The inverse of [`encode`]; a part that does not read is skipped (the record then claims
/// fewer lines, which only matters for a test selection trusting it, so a record whose text
/// does not read at all is dropped by the caller: see [`Store::test_coverage`]).
fn decode(text: &str) -> Option<Vec<u32>> {
    let mut lines = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 1_000_000 {
                    return None;
                }
                lines.extend(a..=b);
            }
            None => lines.push(part.parse().ok()?),
        }
    }
    Some(lines)
}

impl Store {
    /// Every test file's newest coverage record in `repo`. A record with an unreadable line
    /// list is left out whole: an unknown test runs.
    pub fn test_coverage(&self, repo: &str) -> Result<Vec<TestCoverage>> {
        let rows = self.read(|conn| {
            conn.query(
                "SELECT test_file, commit_id, source_path, lines FROM test_coverage
                 WHERE repo = ?1 ORDER BY test_file, source_path",
                &[&repo],
            )
        })?;
        let mut by_test: BTreeMap<String, Option<TestCoverage>> = BTreeMap::new();
        for row in rows {
            let (test_file, commit_id, source, lines): (String, String, String, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            let entry = by_test.entry(test_file.clone()).or_insert_with(|| {
                Some(TestCoverage {
                    test_file,
                    commit_id,
                    lines: BTreeMap::new(),
                })
            });
            match (entry.as_mut(), decode(&lines)) {
                (Some(record), Some(lines)) => {
                    record.lines.insert(source, lines);
                }
                _ => *entry = None,
            }
        }
        Ok(by_test.into_values().flatten().collect())
    }
}

impl WriteTxn<'_> {
    /// Replaces the records of the test files in `measured` (each test file's record is the
    /// newest run of it, whole).
    pub fn record_test_coverage(&self, repo: &str, measured: &[TestCoverage]) -> Result<()> {
        let now = now_ms();
        for record in measured {
            self.conn.execute(
                "DELETE FROM test_coverage WHERE repo = ?1 AND test_file = ?2",
                &[&repo, &record.test_file],
            )?;
            for (source, lines) in &record.lines {
                self.conn.execute(
                    "INSERT INTO test_coverage
                         (repo, test_file, commit_id, source_path, lines, recorded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    &[
                        &repo,
                        &record.test_file,
                        &record.commit_id,
                        source,
                        &encode(lines),
                        &now,
                    ],
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_lists_encode_as_ranges_and_back() {
        assert_eq!(encode(&[1, 2, 3, 9]), "1-3,9");
        assert_eq!(decode("1-3,9"), Some(vec![1, 2, 3, 9]));
        assert_eq!(decode("1-x"), None);
        assert_eq!(decode("9-1"), None);
    }
}
