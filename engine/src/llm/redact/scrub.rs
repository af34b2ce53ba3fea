//! Turning findings into the redacted text: every secret's range, plus every other occurrence
//! of a secret found anywhere (a context line, another message part, a decoded form), merged
//! and replaced by `[REDACTED:<kind>]` in one pass.

use aho_corasick::{AhoCorasick, MatchKind};

use super::{Finding, Redacted};

/// Shorter secrets are only removed where a rule found them: searching the whole text for a
/// four-letter word would blank ordinary prose.
const MIN_GLOBAL: usize = 6;

fn is_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

pub fn scrub(
    text: &str,
    mut findings: Vec<Finding>,
    also: Vec<(&'static str, String)>,
) -> Redacted {
    let mut needles: Vec<(String, &'static str)> = findings
        .iter()
        .filter_map(|f| text.get(f.range.clone()).map(|s| (s.to_string(), f.kind)))
        .chain(also.into_iter().map(|(kind, s)| (s, kind)))
        .filter(|(s, _)| s.trim().len() >= MIN_GLOBAL && !s.contains("[REDACTED"))
        .collect();
    needles.sort();
    needles.dedup_by(|a, b| a.0 == b.0);
    if !needles.is_empty() {
        let searcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(needles.iter().map(|(s, _)| s.as_str()));
        if let Ok(searcher) = searcher {
            let bytes = text.as_bytes();
            for found in searcher.find_iter(text) {
                let (start, end) = (found.start(), found.end());
                // Inside a longer word it is a different string that happens to contain it.
                let glued = (start > 0 && is_word(bytes[start - 1]) && is_word(bytes[start]))
                    || (end < bytes.len() && is_word(bytes[end]) && is_word(bytes[end - 1]));
                if !glued {
                    findings.push(Finding::at(
                        start..end,
                        needles[found.pattern().as_usize()].1,
                    ));
                }
            }
        }
    }
    findings.retain(|f| f.range.start < f.range.end && text.get(f.range.clone()).is_some());
    // Longest first at each start, so a merged range takes the kind of its widest finding.
    findings.sort_by(|a, b| {
        a.range
            .start
            .cmp(&b.range.start)
            .then(b.range.end.cmp(&a.range.end))
    });
    let mut merged: Vec<Finding> = Vec::new();
    for finding in findings {
        match merged.last_mut() {
            Some(last) if finding.range.start < last.range.end => {
                last.range.end = last.range.end.max(finding.range.end);
            }
            _ => merged.push(finding),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut found = Vec::with_capacity(merged.len());
    let mut at = 0;
    for finding in &merged {
        out.push_str(&text[at..finding.range.start]);
        out.push_str(&format!("[REDACTED:{}]", finding.kind));
        found.push(finding.kind);
        at = finding.range.end;
    }
    out.push_str(&text[at..]);
    Redacted { text: out, found }
}
