//! Mutants for Python and JavaScript, the measure's faults for runners other than cargo: a
//! guard as the first statement of each changed function that raises when
//! `CAIRN_MEASURE_MUTANT` is set (one checkout serves the faulty and the clean run).
//! Python functions are found with CPython's own parser (`python_functions.py`); JavaScript
//! function heads are found by pattern and their bodies by brace matching, and a mutated file
//! that `node --check` rejects is put back as it was. Go functions and methods are found as
//! gofmt writes them (`func` at the start of a line, the body closed by `}` at the start of a
//! line); their guard reads a switch declared in a file of its own in the package
//! (`cairn_measure_switch.go`, which the scratch checkout's clean removes).

use std::path::Path;
use std::process::Command;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use super::mutate::{SWITCH, changed_within};

const PYTHON_FUNCTIONS: &str = include_str!("python_functions.py");

/// One function given a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutant {
    pub file: String,
    pub name: String,
    pub line: usize,
    pub changed: usize,
}

#[derive(Debug, Deserialize)]
struct PythonFunction {
    name: String,
    line: usize,
    body_line: usize,
    body_col: usize,
    changed: usize,
}

/// Plants guards in the functions of `file` (relative to `checkout`) that the `lines` touch.
pub fn plant(checkout: &Path, file: &str, lines: &[(usize, usize)]) -> Result<Vec<Mutant>, String> {
    let path = checkout.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("failed to read {file}: {e}"))?;
    let (mutated, mutants) = if file.ends_with(".py") {
        python(checkout, file, &text, lines)?
    } else if [".js", ".mjs", ".cjs"].iter().any(|e| file.ends_with(e)) {
        javascript(file, &text, lines)
    } else if file.ends_with(".go") && !file.ends_with("_test.go") {
        go(file, &text, lines)
    } else {
        return Ok(Vec::new());
    };
    if mutants.is_empty() {
        return Ok(mutants);
    }
    std::fs::write(&path, mutated).map_err(|e| format!("failed to write {file}: {e}"))?;
    if file.ends_with(".go") {
        // The guard reads a package-level switch, declared once per package in its own file
        // so that no file's imports change.
        let switch = path.with_file_name(GO_SWITCH_FILE);
        let package = GO_PACKAGE
            .captures(&text)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().to_string());
        let Some(package) = package else {
            std::fs::write(&path, text).map_err(|e| format!("failed to restore {file}: {e}"))?;
            return Ok(Vec::new());
        };
        let declaration = format!(
            "// Written by cairn tests measure.\npackage {package}\n\nimport \"os\"\n\nvar cairnMeasureMutant = os.Getenv({SWITCH:?}) != \"\"\n"
        );
        std::fs::write(&switch, declaration)
            .map_err(|e| format!("failed to write {}: {e}", switch.display()))?;
        return Ok(mutants);
    }
    if !file.ends_with(".py") {
        let checked = Command::new("node")
            .arg("--check")
            .arg(&path)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !checked {
            std::fs::write(&path, text).map_err(|e| format!("failed to restore {file}: {e}"))?;
            return Ok(Vec::new());
        }
    }
    Ok(mutants)
}

fn python(
    checkout: &Path,
    file: &str,
    text: &str,
    lines: &[(usize, usize)],
) -> Result<(String, Vec<Mutant>), String> {
    let ranges = serde_json::to_string(lines).map_err(|e| e.to_string())?;
    let output = Command::new("python3")
        .args(["-I", "-c", PYTHON_FUNCTIONS, file, &ranges])
        .current_dir(checkout)
        .output()
        .map_err(|e| format!("python3 is needed to place Python faults: {e}"))?;
    if !output.status.success() {
        // Not parsable by this interpreter: no fault can be placed.
        return Ok((text.to_string(), Vec::new()));
    }
    let functions: Vec<PythonFunction> = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("unexpected function listing for {file}: {e}"))?;
    let mut source: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    let mut mutants = Vec::new();
    let mut by_line: Vec<&PythonFunction> = functions.iter().collect();
    by_line.sort_by_key(|f| std::cmp::Reverse(f.body_line));
    for function in by_line {
        let Some(body) = source.get(function.body_line.saturating_sub(1)) else {
            continue;
        };
        let indent: String = body.chars().take(function.body_col).collect();
        if !indent.chars().all(|c| c == ' ' || c == '\t') {
            continue;
        }
        let guard = format!(
            "{indent}if __import__('os').environ.get({SWITCH:?}): raise RuntimeError('cairn measure: mutant in {}')\n",
            function.name.replace(['\'', '\\'], "")
        );
        source.insert(function.body_line - 1, guard);
        mutants.push(Mutant {
            file: file.to_string(),
            name: function.name.clone(),
            line: function.line,
            changed: function.changed,
        });
    }
    Ok((source.concat(), mutants))
}

/// The file declaring a Go package's switch (one per mutated package directory).
pub const GO_SWITCH_FILE: &str = "cairn_measure_switch.go";

static GO_PACKAGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^package\s+(\w+)").unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
});
/// `func Name(`, `func (r *T) Name(`, `func Name[T any](` … `{` at the end of the line.
static GO_HEAD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^func\s+(?:\([^)]*\)\s*)?(\w+)\s*[\[(].*\{\s*$")
        .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
});

fn go(file: &str, text: &str, lines: &[(usize, usize)]) -> (String, Vec<Mutant>) {
    let source: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out: Vec<String> = source.iter().map(|s| s.to_string()).collect();
    let mut mutants = Vec::new();
    for (index, line) in source.iter().enumerate() {
        let Some(name) = GO_HEAD.captures(line.trim_end()).and_then(|c| c.get(1)) else {
            continue;
        };
        // gofmt closes a top-level function with `}` alone at the start of a line.
        let Some(last) = source
            .iter()
            .enumerate()
            .skip(index + 1)
            .find(|(_, l)| l.trim_end() == "}")
            .map(|(i, _)| i)
        else {
            continue;
        };
        let (first, last) = (index + 1, last + 1);
        let changed = changed_within(lines, first, last);
        if changed == 0 {
            continue;
        }
        let name = name.as_str();
        let mut mutated = out[index].trim_end().to_string();
        mutated.push_str(&format!(
            " if cairnMeasureMutant {{ panic(\"cairn measure: mutant in {name}\") }}\n"
        ));
        out[index] = mutated;
        mutants.push(Mutant {
            file: file.to_string(),
            name: name.to_string(),
            line: first,
            changed,
        });
    }
    (out.concat(), mutants)
}

static JS_HEAD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?:\bfunction\b[^{]*\)\s*\{\s*$)",
        r"|(?:=>\s*\{\s*$)",
        r"|(?:^\s*(?:static\s+|async\s+|get\s+|set\s+|\*\s*)*([A-Za-z_$][\w$]*)\s*\([^()]*\)\s*\{\s*$)"
    ))
    .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
});
const NOT_FUNCTIONS: &[&str] = &["if", "for", "while", "switch", "catch", "with", "function"];
const TEST_CALLS: &[&str] = &["describe(", "it(", "test(", "suite("];

fn javascript(file: &str, text: &str, lines: &[(usize, usize)]) -> (String, Vec<Mutant>) {
    let source: Vec<&str> = text.split_inclusive('\n').collect();
    let mut heads = Vec::new();
    for (index, line) in source.iter().enumerate() {
        let code = line.trim_end();
        let Some(captures) = JS_HEAD.captures(code) else {
            continue;
        };
        if let Some(name) = captures.get(1)
            && NOT_FUNCTIONS.contains(&name.as_str())
        {
            continue;
        }
        if TEST_CALLS.iter().any(|call| code.contains(call)) {
            continue;
        }
        let Some(last) = closing_line(&source, index) else {
            continue;
        };
        let (first, last) = (index + 1, last + 1);
        let changed = changed_within(lines, first, last);
        if changed > 0 {
            let name = captures.get(1).map_or_else(
                || format!("function at line {first}"),
                |m| m.as_str().to_string(),
            );
            heads.push((index, name, changed));
        }
    }
    let mut out: Vec<String> = source.iter().map(|s| s.to_string()).collect();
    let mut mutants = Vec::new();
    for (index, name, changed) in heads {
        let line = &out[index];
        let Some(brace) = line.rfind('{') else {
            continue;
        };
        let guard = format!(
            " if (typeof process !== 'undefined' && process.env.{SWITCH}) throw new Error('cairn measure: mutant in {}');",
            name.replace(['\'', '\\'], "")
        );
        let mut mutated = line.clone();
        mutated.insert_str(brace + 1, &guard);
        out[index] = mutated;
        mutants.push(Mutant {
            file: file.to_string(),
            name,
            line: index + 1,
            changed,
        });
    }
    (out.concat(), mutants)
}

/// The line (0-based) holding the brace that closes the one ending line `open`, skipping
/// strings and line comments.
fn closing_line(source: &[&str], open: usize) -> Option<usize> {
    let mut depth = 0i64;
    for (index, line) in source.iter().enumerate().skip(open) {
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for c in line.chars() {
            match quote {
                Some(q) if c == q && previous != '\\' => quote = None,
                Some(_) => {}
                None if c == '/' && previous == '/' => break,
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == '{' => depth += 1,
                None if c == '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(index);
                    }
                }
                None => {}
            }
            previous = if previous == '\\' && c == '\\' {
                ' '
            } else {
                c
            };
        }
        if index > open + 5000 {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_functions_get_a_guard_before_their_first_statement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "import os\n\nclass A:\n    def f(self):\n        \"\"\"doc\"\"\"\n        return 1\n\ndef g(): return 2\n\ndef h(x):\n    return x\n";
        std::fs::write(dir.path().join("m.py"), text).expect("write");
        let mutants = plant(dir.path(), "m.py", &[(6, 6), (8, 8)]).expect("planted");
        assert_eq!(
            mutants.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["A.f"]
        );
        let mutated = std::fs::read_to_string(dir.path().join("m.py")).expect("read");
        assert!(
            mutated.contains("    def f(self):\n        if __import__('os').environ.get(\"CAIRN_MEASURE_MUTANT\"): raise"),
            "{mutated}"
        );
    }

    #[test]
    fn go_functions_get_a_guard_and_the_package_a_switch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "package lru\n\nimport \"fmt\"\n\nfunc New(size int) *Cache {\n\treturn &Cache{size: size}\n}\n\nfunc (c *Cache) Add(k, v any) bool {\n\tfmt.Println(k)\n\treturn false\n}\n\nfunc Keys[K comparable](c *Cache) []K {\n\treturn nil\n}\n";
        std::fs::write(dir.path().join("lru.go"), text).expect("write");
        let mutants = plant(dir.path(), "lru.go", &[(10, 11), (15, 15)]).expect("planted");
        let names: Vec<&str> = mutants.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["Add", "Keys"]);
        let mutated = std::fs::read_to_string(dir.path().join("lru.go")).expect("read");
        assert!(
            mutated.contains("func (c *Cache) Add(k, v any) bool { if cairnMeasureMutant { panic("),
            "{mutated}"
        );
        assert!(
            mutated.contains("func New(size int) *Cache {\n"),
            "{mutated}"
        );
        let switch = std::fs::read_to_string(dir.path().join(GO_SWITCH_FILE)).expect("switch");
        assert!(switch.contains("package lru\n"), "{switch}");
        assert!(
            switch.contains("os.Getenv(\"CAIRN_MEASURE_MUTANT\")"),
            "{switch}"
        );
        // A test file is what reveals faults, never where they go.
        std::fs::write(dir.path().join("lru_test.go"), "package lru\n").expect("write");
        assert!(
            plant(dir.path(), "lru_test.go", &[(1, 1)])
                .expect("none")
                .is_empty()
        );
    }

    #[test]
    fn javascript_functions_get_a_guard_and_test_callbacks_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "function add(a, b) {\n  return a + b;\n}\nconst twice = (x) => {\n  return x * 2; // {\n};\nclass K {\n  area(r) {\n    if (r) {\n      return '}' + r;\n    }\n  }\n}\ndescribe('x', () => {\n  it('y', () => {\n  });\n});\n";
        std::fs::write(dir.path().join("m.js"), text).expect("write");
        let mutants =
            plant(dir.path(), "m.js", &[(2, 2), (5, 5), (10, 10), (16, 16)]).expect("planted");
        let names: Vec<&str> = mutants.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["function at line 1", "function at line 4", "area"]);
        let mutated = std::fs::read_to_string(dir.path().join("m.js")).expect("read");
        assert!(
            mutated.starts_with("function add(a, b) { if (typeof process"),
            "{mutated}"
        );
    }
}
