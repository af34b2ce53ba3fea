//! Diagnostics for workflow files: every problem carries the file and the line and column it
//! is about, so `cairn validate` reads like a compiler. See `ARCHITECTURE.md` ("Pipeline
//! definitions").

use std::fmt;

use super::model::Location;

/// One problem found in a workflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name exactly as the caller gave it to [`super::load_str`].
    pub file: String,
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.location.line, self.location.column, self.message
        )
    }
}

/// A workflow file that cannot be used, with every problem found in it (not only the first:
/// fixing one error at a time is what makes config languages painful).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    /// Sorted by position in the file; never empty.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, diagnostic) in self.diagnostics.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// Collects the diagnostics of one load, so each checker can report and keep going.
#[derive(Debug)]
pub(crate) struct Diagnostics {
    file: String,
    found: Vec<Diagnostic>,
}

impl Diagnostics {
    pub(crate) fn new(file: &str) -> Self {
        Self {
            file: file.to_owned(),
            found: Vec::new(),
        }
    }

    pub(crate) fn report(&mut self, location: Location, message: impl Into<String>) {
        self.found.push(Diagnostic {
            file: self.file.clone(),
            location,
            message: message.into(),
        });
    }

    /// `Ok(value)` when nothing was reported, otherwise every diagnostic in file order.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, Error> {
        if self.found.is_empty() {
            return Ok(value);
        }
        Err(self.into_error())
    }

    pub(crate) fn into_error(self) -> Error {
        let mut diagnostics = self.found;
        // Stable, so two messages about the same spot keep the order they were found in.
        diagnostics
            .sort_by_key(|diagnostic| (diagnostic.location.line, diagnostic.location.column));
        // One problem found twice (a matrix job is read once per combination) is said once.
        let mut seen = std::collections::HashSet::new();
        diagnostics.retain(|diagnostic| {
            seen.insert((
                diagnostic.location.line,
                diagnostic.location.column,
                diagnostic.message.clone(),
            ))
        });
        Error { diagnostics }
    }
}
