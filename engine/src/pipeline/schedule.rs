//! Cron schedules for `trigger.schedule`: one parser configuration shared by validation and by
//! the trigger loop, so a schedule that validates is exactly a schedule that runs.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Parses a 5-field cron expression (`*/5 * * * *`), or 6 fields with leading seconds.
/// Nicknames such as `@hourly` are accepted; a year field is not.
pub fn parse_schedule(text: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|error| error.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn accepts_five_and_six_fields() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        assert!(parse_schedule("0 */5 * * * *").is_ok());
        assert!(parse_schedule("@hourly").is_ok());
    }

    #[test]
    fn rejects_malformed() {
        for text in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * *",
            "every five minutes",
        ] {
            assert!(parse_schedule(text).is_err(), "{text:?} should be rejected");
        }
    }
}
