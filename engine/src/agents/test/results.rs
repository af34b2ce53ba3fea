//! Reading per-test results from a runner's output: libtest's plain output (`cargo test`,
//! stable Rust), JUnit XML (nextest, pytest, Maven, most runners), and `go test -json`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    /// `binary::path::name` for Rust, `classname::name` for JUnit, `package::Test` for Go.
    pub id: String,
    /// The name the runner filters on (`path::name` for libtest, `TestX` for Go).
    pub name: String,
    pub outcome: Outcome,
    pub duration_ms: Option<u64>,
}

/// Which output a runner produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Libtest,
    Junit,
    GoJson,
}

impl Format {
    /// A guess from the command line, for when `with: format:` is not given.
    pub fn for_command(command: &str) -> Option<Format> {
        if command.contains("go test") && command.contains("-json") {
            Some(Format::GoJson)
        } else if command.contains("cargo test") {
            Some(Format::Libtest)
        } else {
            None
        }
    }
}

/// libtest's plain output: `Running unittests src/lib.rs (target/debug/deps/name-hash)` names
/// the binary, then `test path::name ... ok|FAILED|ignored` lines.
pub fn parse_libtest(output: &str) -> Vec<TestResult> {
    let mut binary = String::from("tests");
    let mut results = Vec::new();
    for line in output.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.trim_start().strip_prefix("Running ") {
            // `unittests src/lib.rs (target/debug/deps/cairn_engine-0123abcd)` or `tests/x.rs (…)`
            if let Some(path) = rest.rsplit_once('(').map(|(_, p)| p.trim_end_matches(')')) {
                let file = path.rsplit('/').next().unwrap_or(path);
                binary = file
                    .rsplit_once('-')
                    .map_or(file, |(name, _)| name)
                    .to_string();
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("Doc-tests ") {
            binary = format!("{}-doc", rest.trim());
            continue;
        }
        let Some((name, outcome)) = libtest_line(line) else {
            continue;
        };
        results.push(TestResult {
            id: format!("{binary}::{name}"),
            name,
            outcome,
            duration_ms: None,
        });
    }
    results
}

/// One libtest result line, `test NAME ... ok|FAILED|ignored`: the test's name and outcome.
pub fn libtest_line(line: &str) -> Option<(String, Outcome)> {
    let (name, verdict) = line.strip_prefix("test ")?.rsplit_once(" ... ")?;
    let outcome = match verdict.trim() {
        "ok" => Outcome::Passed,
        "FAILED" => Outcome::Failed,
        v if v.starts_with("ignored") => Outcome::Ignored,
        _ => return None,
    };
    Some((name.trim().to_string(), outcome))
}

/// JUnit XML: `<testcase classname name time>` with `<failure>`, `<error>` or `<skipped>`.
pub fn parse_junit(xml: &str) -> Result<Vec<TestResult>, String> {
    use quick_xml::Reader;
    use quick_xml::events::Event;
    let mut reader = Reader::from_str(xml);
    let mut results = Vec::new();
    let mut current: Option<TestResult> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("bad JUnit XML at byte {}: {e}", reader.buffer_position()))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(tag) | Event::Empty(tag) if tag.name().as_ref() == b"testcase" => {
                let mut name = String::new();
                let mut class = String::new();
                let mut time = None;
                for attribute in tag.attributes().flatten() {
                    let value = attribute
                        .unescape_value()
                        .map(|v| v.into_owned())
                        .unwrap_or_default();
                    match attribute.key.as_ref() {
                        b"name" => name = value,
                        b"classname" => class = value,
                        b"time" => time = value.parse::<f64>().ok().map(|s| (s * 1000.0) as u64),
                        _ => {}
                    }
                }
                let id = if class.is_empty() {
                    name.clone()
                } else {
                    format!("{class}::{name}")
                };
                let result = TestResult {
                    id,
                    name,
                    outcome: Outcome::Passed,
                    duration_ms: time,
                };
                if empty {
                    results.push(result);
                } else {
                    current = Some(result);
                }
            }
            Event::Start(tag) | Event::Empty(tag) => {
                if let Some(test) = current.as_mut() {
                    match tag.name().as_ref() {
                        b"failure" | b"error" => test.outcome = Outcome::Failed,
                        b"skipped" => test.outcome = Outcome::Ignored,
                        _ => {}
                    }
                }
            }
            Event::End(tag) if tag.name().as_ref() == b"testcase" => results.extend(current.take()),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(results)
}

/// `go test -json`: one JSON object per line; `Action` pass/fail/skip with `Test` set.
pub fn parse_go_json(output: &str) -> Vec<TestResult> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|event| {
            let test = event.get("Test")?.as_str()?.to_string();
            let package = event.get("Package").and_then(|p| p.as_str()).unwrap_or("");
            let outcome = match event.get("Action")?.as_str()? {
                "pass" => Outcome::Passed,
                "fail" => Outcome::Failed,
                "skip" => Outcome::Ignored,
                _ => return None,
            };
            let duration_ms = event
                .get("Elapsed")
                .and_then(|e| e.as_f64())
                .map(|s| (s * 1000.0) as u64);
            Some(TestResult {
                id: format!("{package}::{test}"),
                name: test,
                outcome,
                duration_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_output_names_binaries_and_outcomes() {
        let output = "     Running unittests src/lib.rs (target/debug/deps/cairn_engine-0a1b2c)\n\
                      running 2 tests\ntest store::tests::opens ... ok\ntest exec::tests::flaky ... FAILED\n\
                      test slow ... ignored, needs docker\n     Running tests/kill9.rs (target/debug/deps/kill9-99)\n\
                      test survives ... ok\n";
        let results = parse_libtest(output);
        let ids: Vec<(&str, Outcome)> =
            results.iter().map(|r| (r.id.as_str(), r.outcome)).collect();
        assert_eq!(
            ids,
            vec![
                ("cairn_engine::store::tests::opens", Outcome::Passed),
                ("cairn_engine::exec::tests::flaky", Outcome::Failed),
                ("cairn_engine::slow", Outcome::Ignored),
                ("kill9::survives", Outcome::Passed),
            ]
        );
    }

    #[test]
    fn junit_reports_failures_and_skips() {
        let xml = r#"<testsuites><testsuite name="s"><testcase classname="app.Api" name="creates" time="0.25"/>
            <testcase classname="app.Api" name="deletes" time="1"><failure message="boom">trace</failure></testcase>
            <testcase classname="app.Api" name="later"><skipped/></testcase></testsuite></testsuites>"#;
        let results = parse_junit(xml).expect("parses");
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].duration_ms, Some(250));
        assert_eq!(results[1].outcome, Outcome::Failed);
        assert_eq!(results[2].outcome, Outcome::Ignored);
        assert!(
            parse_junit("<testsuite><testcase name='x'>").is_ok()
                || parse_junit("<a><b></a>").is_err()
        );
    }

    #[test]
    fn go_json_events_become_results() {
        let output = r#"{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestA","Elapsed":0.5}
{"Action":"fail","Package":"p","Test":"TestB","Elapsed":0.1}
{"Action":"pass","Package":"p","Elapsed":0.6}"#;
        let results = parse_go_json(output);
        assert_eq!(results.len(), 2);
        assert_eq!(results[1].outcome, Outcome::Failed);
        assert_eq!(results[0].duration_ms, Some(500));
    }
}
