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

/// The text of each failed test's `<failure>`/`<error>` in a JUnit report (its `message` and
/// what it encloses, usually the traceback), by test id as [`parse_junit`] names it: what a fix
/// proposal is told about how a test failed. Unreadable XML gives what was read before it.
pub fn junit_failures(xml: &str) -> std::collections::BTreeMap<String, String> {
    use quick_xml::Reader;
    use quick_xml::events::Event;
    let mut reader = Reader::from_str(xml);
    let mut failures = std::collections::BTreeMap::new();
    let mut test: Option<String> = None;
    // Inside a `<failure>` or `<error>` element, whose text is wanted.
    let mut inside = false;
    while let Ok(event) = reader.read_event() {
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(tag) if tag.name().as_ref() == b"testcase" => {
                let (mut name, mut class) = (String::new(), String::new());
                for attribute in tag.attributes().flatten() {
                    let value = attribute
                        .unescape_value()
                        .map(|v| v.into_owned())
                        .unwrap_or_default();
                    match attribute.key.as_ref() {
                        b"name" => name = value,
                        b"classname" => class = value,
                        _ => {}
                    }
                }
                test = Some(if class.is_empty() {
                    name
                } else {
                    format!("{class}::{name}")
                });
            }
            Event::Start(tag) | Event::Empty(tag)
                if test.is_some() && matches!(tag.name().as_ref(), b"failure" | b"error") =>
            {
                let message = tag
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == b"message")
                    .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                    .unwrap_or_default();
                if let Some(id) = &test {
                    failures.insert(id.clone(), format!("{message}\n"));
                }
                inside = !empty;
            }
            // Text comes in pieces: plain runs, and each entity (`&lt;`) as a reference.
            Event::Text(body) if inside => push(
                &mut failures,
                test.as_deref(),
                &String::from_utf8_lossy(&body),
            ),
            Event::CData(body) if inside => push(
                &mut failures,
                test.as_deref(),
                &String::from_utf8_lossy(&body),
            ),
            Event::GeneralRef(name) if inside => {
                let name = String::from_utf8_lossy(&name).into_owned();
                let resolved = match name.strip_prefix('#') {
                    Some(code) => code
                        .strip_prefix('x')
                        .map_or_else(
                            || code.parse().ok(),
                            |hex| u32::from_str_radix(hex, 16).ok(),
                        )
                        .and_then(char::from_u32)
                        .map(String::from),
                    None => quick_xml::escape::resolve_predefined_entity(&name).map(str::to_string),
                };
                push(
                    &mut failures,
                    test.as_deref(),
                    &resolved.unwrap_or_else(|| format!("&{name};")),
                );
            }
            Event::End(tag) if matches!(tag.name().as_ref(), b"failure" | b"error") => {
                inside = false
            }
            Event::End(tag) if tag.name().as_ref() == b"testcase" => {
                test = None;
                inside = false;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    failures
        .into_iter()
        .map(|(id, text)| (id, text.trim().to_string()))
        .collect()
}

fn push(
    failures: &mut std::collections::BTreeMap<String, String>,
    test: Option<&str>,
    piece: &str,
) {
    if let Some(id) = test {
        failures.entry(id.to_string()).or_default().push_str(piece);
    }
}

/// The results of one run of a runner: from its output (libtest, go-json), or from the JUnit
/// report at `junit` (relative to `dir`, or absolute).
pub fn collect(
    format: Format,
    junit: Option<&str>,
    dir: &std::path::Path,
    output: &str,
) -> Result<Vec<TestResult>, String> {
    match format {
        Format::Libtest => Ok(parse_libtest(output)),
        Format::GoJson => Ok(parse_go_json(output)),
        Format::Junit => {
            let path = dir.join(junit.unwrap_or_default());
            let xml = std::fs::read_to_string(&path)
                .map_err(|e| format!("failed to read the JUnit report {}: {e}", path.display()))?;
            parse_junit(&xml)
        }
    }
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
    fn junit_failures_keep_the_message_and_the_trace() {
        let xml = r#"<testsuite><testcase classname="tests.test_pay" name="test_charge"><failure message="assert 10 == 100">Traceback &lt;x&gt;
  line 3</failure></testcase><testcase classname="c" name="ok"/><testcase name="e"><error message="boom"/></testcase><testcase name="broken"><failure"#;
        let failures = junit_failures(xml);
        assert_eq!(
            failures
                .get("tests.test_pay::test_charge")
                .map(String::as_str),
            Some("assert 10 == 100\nTraceback <x>\n  line 3")
        );
        assert_eq!(failures.get("e").map(String::as_str), Some("boom"));
        assert!(!failures.contains_key("c::ok"));
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
