//! Limits on YAML files read from outside (workflows, `cairn.yaml`), checked before a node tree
//! is built: size, nesting depth, and a single document.
//!
//! The tree walkers (and dropping a tree) recurse once per nesting level, so 30,000 nested
//! `[` (a 60 KB file) overflowed the stack and killed `cairn serve`. The check here streams the
//! parser's events without building anything, keeping a counter instead of a stack, so it
//! costs one linear pass and no recursion. A second document (`---`) would otherwise be
//! ignored silently, with everything in it.

use std::io::Read;
use std::path::Path;

use yaml_rust2::parser::{Event, Parser};

use super::model::Location;

/// Largest YAML file read: far beyond any real workflow (the default pipeline is ~3 KB; 20,000
/// steps fit in ~1 MB) while keeping a mistaken or hostile file from filling memory.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Deepest nesting of mappings and lists. Workflows need about 6 (`steps`, a step, `with`,
/// an agent's own nesting); 64 leaves any honest `with:` block plenty of room.
pub const MAX_DEPTH: usize = 64;

/// A file that breaks a limit: where, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    pub location: Location,
    pub message: String,
}

/// Reads at most [`MAX_FILE_BYTES`] (plus one, to tell a file that is exactly at the limit from
/// one beyond it) as UTF-8 text.
pub fn read_limited(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|error| describe_io(path, &error))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| describe_io(path, &error))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|error| {
        format!(
            "the file is not UTF-8 text (invalid byte at offset {})",
            error.utf8_error().valid_up_to()
        )
    })
}

/// Why a file could not be read, in words; the caller's message names the file.
fn describe_io(path: &Path, error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ if path.is_dir() => "it is a directory, not a file".to_owned(),
        _ => error.to_string(),
    }
}

fn too_large() -> String {
    format!(
        "the file is larger than {} MiB, the most Cairn reads; is this the right file?",
        MAX_FILE_BYTES / (1024 * 1024)
    )
}

/// A configuration file's text (checked by [`check`] first) deserialized as `T`; a failure
/// says where, as the loader or the value saw it (`describe` prefixes a value's message).
pub fn deserialize<T: serde::de::DeserializeOwned>(
    text: &str,
    describe: impl Fn(String) -> String,
) -> Result<T, LimitError> {
    check(text)?;
    marked_yaml::from_yaml(0, text).map_err(|failure| match failure {
        marked_yaml::FromYamlError::ParseYaml(load) => {
            let (location, message) = super::describe_load_error(&load);
            LimitError { location, message }
        }
        marked_yaml::FromYamlError::FromNode(node) => {
            let inner = node.into_inner();
            let (line, column) = inner
                .start_mark()
                .map_or((1, 1), |mark| (mark.line(), mark.column()));
            LimitError {
                location: Location { line, column },
                message: describe(inner.to_string()),
            }
        }
    })
}

/// Checks size, depth and document count of `text`. A syntax error is not reported here: the
/// loader reports it with its usual message (everything before it passed these checks).
pub fn check(text: &str) -> Result<(), LimitError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(LimitError {
            location: Location { line: 1, column: 1 },
            message: too_large(),
        });
    }
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    let mut documents = 0usize;
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(next) => next,
            // The scanner reads flow collections ahead and has its own (higher) nesting limit;
            // it is the same problem, so it gets the same message.
            Err(error) if error.info().contains("recursion limit") => {
                return Err(too_deep(Location {
                    line: error.marker().line(),
                    column: error.marker().col() + 1,
                }));
            }
            Err(_) => return Ok(()),
        };
        let at = Location {
            line: marker.line(),
            column: marker.col() + 1,
        };
        match event {
            Event::StreamEnd => return Ok(()),
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(LimitError {
                        location: at,
                        message: "a second YAML document starts here (after `---`); a file \
                                  holds one document, so remove the `---` line or move what \
                                  follows it to its own file"
                            .to_owned(),
                    });
                }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(at));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

fn too_deep(location: Location) -> LimitError {
    LimitError {
        location,
        message: format!(
            "lists and mappings are nested more than {MAX_DEPTH} levels deep here; a workflow \
             needs only a few levels"
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let text = format!(
            "name: x\nsteps: {}{}\n",
            "[".repeat(30_000),
            "]".repeat(30_000)
        );
        let error = check(&text).unwrap_err();
        assert_eq!(error.location.line, 2);
        assert!(error.message.contains("nested more than 64"), "{error:?}");
        let shallow_flow = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        assert!(
            check(&shallow_flow)
                .unwrap_err()
                .message
                .contains("nested more than 64")
        );
        let block: String = (0..200)
            .map(|level| format!("{}- \n", "  ".repeat(level)))
            .collect();
        assert!(check(&block).is_err());
        let fine = "name: x\nsteps:\n  - id: a\n    agent: noop\n    with: {a: {b: [1, [2]]}}\n";
        assert_eq!(check(fine), Ok(()));
    }

    #[test]
    fn a_second_document_is_refused_where_it_starts() {
        let error = check("name: x\nsteps: []\n---\nname: y\n").unwrap_err();
        assert_eq!(error.location.line, 3);
        assert!(error.message.contains("second YAML document"), "{error:?}");
        assert_eq!(check("---\nname: x\n"), Ok(()));
    }

    #[test]
    fn size_is_bounded_when_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_FILE_BYTES + 10).unwrap();
        let message = read_limited(&path).unwrap_err();
        assert!(message.contains("larger than 4 MiB"), "{message}");
        std::fs::write(&path, b"name: \xff\n").unwrap();
        assert!(read_limited(&path).unwrap_err().contains("not UTF-8"));
    }
}
