//! JavaScript and TypeScript imports: `import … from 'x'`, `import 'x'`, `export … from 'x'`,
//! `require('x')` and `import('x')` with a literal, read with patterns (a comment naming a
//! module only adds an edge, which is safe). Relative specifiers resolve as Node and bundlers
//! do (the exact file, then with an extension, then `index.*`; `./a.js` may be `a.ts`). A call
//! with a computed name, or a bare name that is neither a Node built-in nor a declared
//! dependency (a path alias, the package importing itself), may import anything: the file is
//! dynamic.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use super::{Found, JAVASCRIPT, dir_of, join};

static STATIC_IMPORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\b(?:import|export)\b[^;'"`]*?\bfrom\s*['"]([^'"\n]+)['"]|\bimport\s*['"]([^'"\n]+)['"]"#)
        .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
});
static LITERAL_CALL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\b(?:require|import)\s*\(\s*(?:'([^'\n]*)'|"([^"\n]*)"|`([^`$\n]*)`)\s*\)"#)
        .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
});
static ANY_CALL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:require|import)\s*\(")
        .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
});

const BUILTINS: &[&str] = &[
    "assert",
    "async_hooks",
    "buffer",
    "child_process",
    "cluster",
    "console",
    "constants",
    "crypto",
    "dgram",
    "diagnostics_channel",
    "dns",
    "domain",
    "events",
    "fs",
    "http",
    "http2",
    "https",
    "inspector",
    "module",
    "net",
    "os",
    "path",
    "perf_hooks",
    "process",
    "punycode",
    "querystring",
    "readline",
    "repl",
    "stream",
    "string_decoder",
    "sys",
    "timers",
    "tls",
    "trace_events",
    "tty",
    "url",
    "util",
    "v8",
    "vm",
    "wasi",
    "worker_threads",
    "zlib",
    "test",
];

/// Reads the JavaScript files among `files` (every tracked file, relative to `workspace`).
pub fn read(workspace: &Path, scripts: &[&String], files: &[String]) -> Found {
    let known: HashSet<&str> = files.iter().map(String::as_str).collect();
    let dependencies = declared_dependencies(workspace, files);
    let mut out = Found::default();
    for file in scripts {
        let Ok(text) = std::fs::read_to_string(workspace.join(file.as_str())) else {
            out.dynamic
                .insert(file.to_string(), "unreadable as UTF-8 text".into());
            continue;
        };
        let mut specifiers = Vec::new();
        for captures in STATIC_IMPORT.captures_iter(&text) {
            specifiers.extend(captures.iter().skip(1).flatten().map(|m| m.as_str()));
        }
        let mut literal_calls = 0;
        for captures in LITERAL_CALL.captures_iter(&text) {
            literal_calls += 1;
            specifiers.extend(captures.iter().skip(1).flatten().map(|m| m.as_str()));
        }
        let mut dynamic = Vec::new();
        if ANY_CALL.find_iter(&text).count() > literal_calls {
            dynamic.push("a require() or import() of a computed name".to_string());
        }
        for specifier in specifiers {
            if specifier.starts_with('.') || specifier.starts_with('/') {
                for target in resolve(dir_of(file), specifier, &known) {
                    out.depend(file, &target, "imports");
                }
                continue;
            }
            let package = package_name(specifier);
            let external = specifier.starts_with("node:")
                || BUILTINS.contains(&package)
                || dependencies.contains(package);
            if !external {
                dynamic.push(format!(
                    "imports `{specifier}`, neither relative nor a declared dependency"
                ));
            }
        }
        if !dynamic.is_empty() {
            out.dynamic.insert(file.to_string(), dynamic.join(", "));
        }
    }
    out
}

/// `@scope/name/sub` → `@scope/name`, `name/sub` → `name`.
fn package_name(specifier: &str) -> &str {
    let mut parts = specifier.splitn(3, '/');
    let first = parts.next().unwrap_or(specifier);
    match (first.starts_with('@'), parts.next()) {
        (true, Some(second)) => &specifier[..first.len() + 1 + second.len()],
        _ => first,
    }
}

/// The files a relative specifier can name.
fn resolve(dir: &str, specifier: &str, known: &HashSet<&str>) -> Vec<String> {
    let Some(base) = join(if specifier.starts_with('/') { "" } else { dir }, specifier) else {
        return Vec::new();
    };
    if known.contains(base.as_str()) {
        return vec![base];
    }
    // TypeScript's `./a.js` names `a.ts`.
    let stem = base
        .rsplit_once('.')
        .filter(|(_, ext)| JAVASCRIPT.contains(ext))
        .map_or(base.as_str(), |(stem, _)| stem);
    let mut found = Vec::new();
    for ext in JAVASCRIPT.iter().chain(&["json"]) {
        for candidate in [format!("{stem}.{ext}"), format!("{base}/index.{ext}")] {
            if known.contains(candidate.as_str()) {
                found.push(candidate);
            }
        }
    }
    if found.is_empty() {
        // A directory with a package.json or no index: everything in it.
        let prefix = format!("{base}/");
        found.extend(
            known
                .iter()
                .filter(|f| f.starts_with(&prefix))
                .map(|f| f.to_string()),
        );
    }
    found
}

/// Every dependency any `package.json` of the repository declares.
fn declared_dependencies(workspace: &Path, files: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for manifest in files
        .iter()
        .filter(|f| f.rsplit('/').next() == Some("package.json"))
    {
        let Ok(text) = std::fs::read_to_string(workspace.join(manifest)) else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        for section in [
            "dependencies",
            "devDependencies",
            "peerDependencies",
            "optionalDependencies",
        ] {
            if let Some(map) = value.get(section).and_then(|v| v.as_object()) {
                names.extend(map.keys().cloned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specifiers_resolve_and_unknown_names_are_dynamic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<String> = [
            ("package.json", r#"{"devDependencies": {"@scope/kit": "1"}}"#),
            ("lib/a.js", "const b = require('./b')\nimport fs from 'node:fs'\nimport kit from '@scope/kit/x'\n"),
            ("lib/b.ts", "export { c } from './util/index.js'\nimport {\n  d,\n} from \"../lib/d.mjs\"\n"),
            ("lib/d.mjs", "import('./a.js')\n"),
            ("lib/util/index.js", "const x = require(name)\n"),
            ("lib/e.js", "import alias from '@/thing'\n"),
            ("test/a.test.js", "import { a } from '../lib/a.js'\nimport '../lib/util'\n"),
        ]
        .iter()
        .map(|(path, text)| {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(full, text).expect("write");
            path.to_string()
        })
        .collect();
        let scripts: Vec<&String> = files.iter().filter(|f| !f.ends_with(".json")).collect();
        let found = read(dir.path(), &scripts, &files);
        let deps = |file: &str| -> Vec<&str> {
            found
                .deps
                .get(file)
                .map(|d| d.keys().map(String::as_str).collect())
                .unwrap_or_default()
        };
        assert_eq!(deps("lib/a.js"), ["lib/b.ts"]);
        assert_eq!(deps("lib/b.ts"), ["lib/d.mjs", "lib/util/index.js"]);
        assert_eq!(deps("lib/d.mjs"), ["lib/a.js"]);
        assert_eq!(deps("test/a.test.js"), ["lib/a.js", "lib/util/index.js"]);
        assert!(
            !found.dynamic.contains_key("lib/a.js"),
            "{:?}",
            found.dynamic
        );
        assert!(found.dynamic["lib/util/index.js"].contains("computed name"));
        assert!(found.dynamic["lib/e.js"].contains("`@/thing`"));
    }
}
