//! Human durations in workflow files: `500ms`, `90s`, `10m`, `1h30m`, `2d`.
//!
//! A unit is always required: a bare `10` is ambiguous (seconds? minutes?) and is rejected
//! rather than guessed. Zero is a valid duration here; fields where zero makes no sense (a
//! timeout) reject it themselves, with a message about that field.

use std::time::Duration;

/// Units in the order they are tried, longest suffix first so `ms` is not read as `m`.
const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses a duration made of one or more `<whole number><unit>` parts.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("a duration must not be empty; write e.g. `30s` or `10m`".to_owned());
    }
    if trimmed.starts_with('-') {
        return Err(format!("durations cannot be negative, found `{trimmed}`"));
    }
    let mut rest = trimmed;
    let mut total_millis: u64 = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|character: char| !character.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(format!(
                "expected a number at `{rest}` in duration `{trimmed}`; write e.g. `30s` or `1h30m`"
            ));
        }
        let (digits, after_digits) = rest.split_at(digits_end);
        let unit_end = after_digits
            .find(|character: char| character.is_ascii_digit())
            .unwrap_or(after_digits.len());
        let (unit, after_unit) = after_digits.split_at(unit_end);
        if unit.is_empty() {
            return Err(format!(
                "missing unit after `{digits}` in duration `{trimmed}`; use ms, s, m, h or d (e.g. `{digits}s`)"
            ));
        }
        let Some(&(_, unit_millis)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!(
                "unknown unit `{unit}` in duration `{trimmed}`; use ms, s, m, h or d"
            ));
        };
        let too_large = || format!("duration `{trimmed}` is too large");
        let amount: u64 = digits.parse().map_err(|_| too_large())?;
        let millis = amount.checked_mul(unit_millis).ok_or_else(too_large)?;
        total_millis = total_millis.checked_add(millis).ok_or_else(too_large)?;
        rest = after_unit;
    }
    Ok(Duration::from_millis(total_millis))
}

/// The inverse of [`parse_duration`] for display: `5400s` is shown as `1h30m`.
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for &(name, unit_millis) in UNITS.iter().rev() {
        let unit_millis = u128::from(unit_millis);
        if millis >= unit_millis {
            text.push_str(&format!("{}{name}", millis / unit_millis));
            millis %= unit_millis;
        }
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn accepts_common_forms() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed() {
        for text in [
            "",
            "  ",
            "10",
            "-5s",
            "10x",
            "s",
            "1h30",
            "1.5h",
            "10 m",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} should be rejected");
        }
        let message = parse_duration("10x").unwrap_err();
        assert!(message.contains("unknown unit `x`"), "{message}");
    }

    #[test]
    fn formats_round_trip() {
        for text in ["90s", "1h30m", "500ms", "2d", "1m1s1ms"] {
            let duration = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
