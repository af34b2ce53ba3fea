//! Fix suggestions on failure (`with: fix: true`; the brief's `on_failure: "Generate fix
//! suggestions, …"`): when tests fail for real (not flaky, not quarantined), the model is asked
//! for a patch to non-test files ([`propose`]), the answer is read as hostile input ([`patch`]),
//! and the gate ([`gate`]) accepts it only if it applies, builds, makes the failing tests pass
//! and breaks none. Every proposal is recorded with its verdict (`test_proposals`, kind `fix`);
//! an accepted one goes to `test-proposals/fix-<sha12>.patch` and/or the branch
//! `cairn/fix/<sha12>` (`../handover.rs`), never onto the tested branch. The step still fails:
//! a suggestion is for a human to review.

mod gate;
mod patch;
mod propose;
mod suggest;

use serde_json::Value;

use super::handover::Delivery;

pub use gate::Suite;
pub use patch::{Malformed, Patch, parse};
pub use propose::Failure;
pub use suggest::{Call, suggest};

/// `with: fix:`, `max_fixes:`, and `proposals:` (shared with generated tests).
#[derive(Debug, Clone)]
pub struct Options {
    pub enabled: bool,
    pub delivery: Delivery,
    /// Each proposal costs a model call, a build and a test run: a failing step gets at most
    /// this many, and stops at the first accepted.
    pub max_fixes: usize,
}

impl Options {
    pub fn from(with: &Value) -> Result<Options, String> {
        let enabled = match with.get("fix") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(on)) => *on,
            Some(other) => {
                return Err(format!("with.fix: expected true or false, got {other}"));
            }
        };
        let max_fixes = match with.get("max_fixes") {
            None | Some(Value::Null) => 1,
            Some(value) => match value.as_u64() {
                Some(count @ 1..=10) => count as usize,
                _ => {
                    return Err(format!(
                        "with.max_fixes: expected a count from 1 to 10, got {value}"
                    ));
                }
            },
        };
        Ok(Options {
            enabled,
            delivery: Delivery::from_with(with)?,
            max_fixes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_are_validated() {
        let off = Options::from(&json!({})).unwrap_or_else(|e| panic!("{e}"));
        assert!(!off.enabled);
        assert_eq!(off.max_fixes, 1);
        let on = Options::from(&json!({ "fix": true, "max_fixes": 2, "proposals": "both" }))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(on.enabled && on.delivery.branch && on.delivery.patch);
        assert_eq!(on.max_fixes, 2);
        for (with, message) in [
            (json!({ "fix": "yes" }), "with.fix: expected true or false"),
            (
                json!({ "max_fixes": 0 }),
                "with.max_fixes: expected a count from 1 to 10",
            ),
            (json!({ "max_fixes": "two" }), "with.max_fixes"),
            (json!({ "proposals": "email" }), "with.proposals"),
        ] {
            let error = Options::from(&with).err().unwrap_or_default();
            assert!(error.starts_with(message), "{with}: {error}");
        }
    }
}
