//! Deploy windows and freezes (`with: windows:`, `freeze:`): when a deploy may move traffic.
//! Pure: [`Calendar::gate`] answers for a given instant, so the rules are tested without a
//! clock; the agent (`gate.rs`) waits on the answer.
//!
//! ```yaml
//! with:
//!   timezone: local               # or utc: what `hours` and freeze dates mean (default local,
//!                                 # like cron triggers)
//!   windows:                      # high-risk deploys only inside one of these
//!     - { days: [mon, tue, wed, thu], hours: "09:00-16:00" }
//!   window_risks: [high]          # which risk levels need a window (default: high)
//!   freeze:                       # no deploy at all inside any of these
//!     - { from: 2026-12-20, to: 2027-01-04, reason: year end }      # dates are whole days
//!     - { from: "2026-12-05T18:00", to: "2026-12-06T08:00" }
//!     - { days: [fri], hours: "15:00-24:00", reason: no Friday deploys }
//!   hotfix_bypasses_freeze: true  # a hotfix commit may deploy in a freeze (default false)
//! ```
//!
//! Outside its window a high-risk deploy waits (durably, shown by `cairn status`) for the next
//! window or for `cairn approve RUN`; in a freeze every deploy waits for its end or an approval,
//! except a hotfix when the workflow says so. Without `windows:` every hour is a window.

use std::collections::BTreeSet;

use chrono::{
    DateTime, Datelike, Duration as ChronoDuration, Local, NaiveDate, NaiveDateTime, Timelike, Utc,
    Weekday,
};
use serde_json::{Map, Value};

/// Minutes of the day, `start..end`, on some weekdays (all when empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Weekly {
    pub days: BTreeSet<u32>,
    pub start_minute: u32,
    pub end_minute: u32,
}

impl Weekly {
    fn contains(&self, weekday: Weekday, minute: u32) -> bool {
        (self.days.is_empty() || self.days.contains(&weekday.num_days_from_monday()))
            && minute >= self.start_minute
            && minute < self.end_minute
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Period {
    Weekly(Weekly),
    /// `from..to` in the calendar's time zone.
    Between(NaiveDateTime, NaiveDateTime),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Freeze {
    pub period: Period,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Local,
    Utc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    pub zone: Zone,
    pub windows: Vec<Weekly>,
    pub window_risks: Vec<String>,
    pub freezes: Vec<Freeze>,
    pub hotfix_bypasses_freeze: bool,
}

/// May the deploy go now?
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Yes; the text says why when a rule was involved (a bypassed freeze), else empty.
    Open(String),
    /// No: why, and when it opens on its own (within two weeks), if it does.
    Closed {
        reason: String,
        opens: Option<DateTime<Utc>>,
    },
}

impl Calendar {
    /// Reads `timezone`, `windows`, `window_risks`, `freeze` and `hotfix_bypasses_freeze` from a
    /// step's `with:` mapping.
    pub fn from_map(map: &Map<String, Value>) -> Result<Calendar, String> {
        let zone = match map.get("timezone").and_then(Value::as_str) {
            None => {
                if map.get("timezone").is_some_and(|v| !v.is_null()) {
                    return Err("timezone must be `local` or `utc`".into());
                }
                Zone::Local
            }
            Some(text) if text.eq_ignore_ascii_case("local") => Zone::Local,
            Some(text) if text.eq_ignore_ascii_case("utc") => Zone::Utc,
            Some(other) => {
                return Err(format!(
                    "timezone `{other}` is not one of local, utc (windows follow the engine's clock, like cron triggers)"
                ));
            }
        };
        let windows = list(map, "windows")?
            .iter()
            .enumerate()
            .map(|(i, item)| weekly(item, &format!("windows[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let window_risks = match map.get("window_risks") {
            None | Some(Value::Null) => vec!["high".to_string()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item.as_str() {
                    Some(level @ ("low" | "medium" | "high")) => Ok(level.to_string()),
                    _ => Err(format!(
                        "window_risks: {item} is not one of low, medium, high"
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("window_risks must be a list of risk levels".into()),
        };
        let freezes = list(map, "freeze")?
            .iter()
            .enumerate()
            .map(|(i, item)| freeze(item, &format!("freeze[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let hotfix_bypasses_freeze = match map.get("hotfix_bypasses_freeze") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("hotfix_bypasses_freeze must be true or false".into()),
        };
        Ok(Calendar {
            zone,
            windows,
            window_risks,
            freezes,
            hotfix_bypasses_freeze,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.freezes.is_empty()
    }

    fn wall_clock(&self, at: DateTime<Utc>) -> NaiveDateTime {
        match self.zone {
            Zone::Utc => at.naive_utc(),
            Zone::Local => at.with_timezone(&Local).naive_local(),
        }
    }

    /// The answer at `at` alone, without looking for the next opening.
    fn gate_at(&self, risk: &str, hotfix: bool, at: DateTime<Utc>) -> Gate {
        let wall = self.wall_clock(at);
        let minute = wall.hour() * 60 + wall.minute();
        let weekday = wall.weekday();
        let frozen = self.freezes.iter().find(|f| match &f.period {
            Period::Weekly(w) => w.contains(weekday, minute),
            Period::Between(from, to) => wall >= *from && wall < *to,
        });
        let mut note = String::new();
        if let Some(freeze) = frozen {
            if hotfix && self.hotfix_bypasses_freeze {
                note = format!(
                    "a hotfix in the freeze `{}`: allowed by `hotfix_bypasses_freeze`",
                    freeze.reason
                );
            } else {
                let why = if hotfix {
                    " (a hotfix, but the workflow does not set `hotfix_bypasses_freeze`)"
                } else {
                    ""
                };
                return Gate::Closed {
                    reason: format!("deploy freeze: {}{why}", freeze.reason),
                    opens: None,
                };
            }
        }
        let needs_window = !self.windows.is_empty() && self.window_risks.iter().any(|r| r == risk);
        if needs_window && !self.windows.iter().any(|w| w.contains(weekday, minute)) {
            return Gate::Closed {
                reason: format!(
                    "{risk}-risk deploys only inside their windows ({})",
                    self.windows
                        .iter()
                        .map(describe)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                opens: None,
            };
        }
        Gate::Open(note)
    }

    /// May a deploy of `risk` (a hotfix or not) go at `now`? When not, also when it opens on
    /// its own: the first minute within two weeks at which it would.
    pub fn gate(&self, risk: &str, hotfix: bool, now: DateTime<Utc>) -> Gate {
        match self.gate_at(risk, hotfix, now) {
            Gate::Open(note) => Gate::Open(note),
            Gate::Closed { reason, .. } => {
                let start = now
                    .with_second(0)
                    .and_then(|t| t.with_nanosecond(0))
                    .unwrap_or(now);
                let opens = (1..=14 * 24 * 60)
                    .map(|m| start + ChronoDuration::minutes(m))
                    .find(|at| matches!(self.gate_at(risk, hotfix, *at), Gate::Open(_)));
                Gate::Closed { reason, opens }
            }
        }
    }

    /// `at` in the calendar's zone, for messages.
    pub fn show(&self, at: DateTime<Utc>) -> String {
        match self.zone {
            Zone::Utc => at.format("%a %Y-%m-%d %H:%M UTC").to_string(),
            Zone::Local => at
                .with_timezone(&Local)
                .format("%a %Y-%m-%d %H:%M %Z")
                .to_string(),
        }
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn describe(window: &Weekly) -> String {
    let days = if window.days.is_empty() {
        "every day".to_string()
    } else {
        window
            .days
            .iter()
            .map(|d| DAYS[*d as usize])
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{days} {:02}:{:02}-{:02}:{:02}",
        window.start_minute / 60,
        window.start_minute % 60,
        window.end_minute / 60,
        window.end_minute % 60
    )
}

fn list<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("{key} must be a list")),
    }
}

fn weekly(item: &Value, at: &str) -> Result<Weekly, String> {
    let map = item.as_object().ok_or_else(|| {
        format!("{at} must be a mapping such as {{ days: [mon], hours: \"09:00-17:00\" }}")
    })?;
    if let Some(key) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "days" | "hours" | "reason"))
    {
        return Err(format!("unknown key `{at}.{key}` (known: days, hours)"));
    }
    let days = match map.get("days") {
        None | Some(Value::Null) => BTreeSet::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|d| {
                let name = d.as_str().unwrap_or("").to_ascii_lowercase();
                DAYS.iter()
                    .position(|day| name.starts_with(day))
                    .map(|p| p as u32)
                    .ok_or_else(|| format!("{at}.days: `{d}` is not a weekday (mon … sun)"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("{at}.days must be a list of weekdays")),
    };
    let hours = match map.get("hours") {
        None | Some(Value::Null) => "00:00-24:00",
        Some(Value::String(text)) => text.as_str(),
        Some(_) => {
            return Err(format!(
                "{at}.hours must be a range such as \"09:00-17:00\""
            ));
        }
    };
    let (start, end) = hours
        .split_once('-')
        .ok_or_else(|| format!("{at}.hours `{hours}` must be a range such as \"09:00-17:00\""))?;
    let (start_minute, end_minute) = (
        minute_of_day(start.trim(), at)?,
        minute_of_day(end.trim(), at)?,
    );
    if start_minute >= end_minute {
        return Err(format!(
            "{at}.hours `{hours}` must end after it starts (split a range over midnight in two)"
        ));
    }
    Ok(Weekly {
        days,
        start_minute,
        end_minute,
    })
}

fn minute_of_day(text: &str, at: &str) -> Result<u32, String> {
    let bad = || format!("{at}.hours: `{text}` is not a time HH:MM (00:00 … 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m > 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn freeze(item: &Value, at: &str) -> Result<Freeze, String> {
    let map = item
        .as_object()
        .ok_or_else(|| format!("{at} must be a mapping"))?;
    let reason = match map.get("reason") {
        None | Some(Value::Null) => "a freeze".to_string(),
        Some(Value::String(text)) => text.clone(),
        Some(_) => return Err(format!("{at}.reason must be text")),
    };
    if map.contains_key("from") || map.contains_key("to") {
        if let Some(key) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "from" | "to" | "reason"))
        {
            return Err(format!(
                "unknown key `{at}.{key}` (a period has from, to, reason)"
            ));
        }
        let from = instant(map.get("from"), &format!("{at}.from"), false)?;
        let to = instant(map.get("to"), &format!("{at}.to"), true)?;
        if from >= to {
            return Err(format!("{at}: `to` must come after `from`"));
        }
        return Ok(Freeze {
            period: Period::Between(from, to),
            reason,
        });
    }
    Ok(Freeze {
        period: Period::Weekly(weekly(item, at)?),
        reason,
    })
}

/// A date (a whole day: its start, or for `to` the start of the next day) or a date and time.
fn instant(value: Option<&Value>, at: &str, end: bool) -> Result<NaiveDateTime, String> {
    let text = value
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at} is required: a date 2026-12-20 or 2026-12-20T18:00"))?;
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(parsed) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(parsed);
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{at}: `{text}` is not a date 2026-12-20 or 2026-12-20T18:00"))?;
    let date = if end {
        date.succ_opt().unwrap_or(date)
    } else {
        date
    };
    Ok(date.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// A UTC instant from a wall-clock text, for tests.
#[cfg(test)]
fn utc(text: &str) -> DateTime<Utc> {
    use chrono::TimeZone;
    Utc.from_utc_datetime(
        &NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M").expect("test instant"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn calendar(with: Value) -> Calendar {
        Calendar::from_map(with.as_object().expect("mapping")).expect("valid calendar")
    }

    #[test]
    fn high_risk_waits_for_its_window() {
        let cal = calendar(json!({
            "timezone": "utc",
            "windows": [{ "days": ["mon", "tue", "wed", "thu"], "hours": "09:00-16:00" }],
        }));
        // 2026-12-03 is a Thursday.
        assert_eq!(
            cal.gate("high", false, utc("2026-12-03T10:00")),
            Gate::Open(String::new())
        );
        match cal.gate("high", false, utc("2026-12-03T16:30")) {
            Gate::Closed { reason, opens } => {
                assert!(reason.contains("mon,tue,wed,thu 09:00-16:00"), "{reason}");
                // Friday to Sunday are outside: next Monday 09:00.
                assert_eq!(opens, Some(utc("2026-12-07T09:00")));
            }
            open => panic!("{open:?}"),
        }
        // Low and medium risk deploy at any hour unless `window_risks` says otherwise.
        assert!(matches!(
            cal.gate("medium", false, utc("2026-12-05T03:00")),
            Gate::Open(_)
        ));
    }

    #[test]
    fn freezes_stop_everything_but_allowed_hotfixes() {
        let mut with = json!({
            "timezone": "utc",
            "freeze": [
                { "from": "2026-12-20", "to": "2027-01-04", "reason": "year end" },
                { "days": ["fri"], "hours": "15:00-24:00", "reason": "no Friday deploys" },
            ],
        });
        let cal = calendar(with.clone());
        match cal.gate("low", false, utc("2027-01-04T12:00")) {
            Gate::Closed { reason, opens } => {
                assert!(reason.contains("year end"), "{reason}");
                // `to` is a whole day: the freeze ends at the start of Jan 5.
                assert_eq!(opens, Some(utc("2027-01-05T00:00")));
            }
            open => panic!("{open:?}"),
        }
        match cal.gate("low", true, utc("2026-12-04T16:00")) {
            Gate::Closed { reason, .. } => {
                assert!(
                    reason.contains("no Friday deploys")
                        && reason.contains("hotfix_bypasses_freeze"),
                    "{reason}"
                )
            }
            open => panic!("a hotfix needs the workflow's permission: {open:?}"),
        }
        with["hotfix_bypasses_freeze"] = json!(true);
        let cal = calendar(with);
        match cal.gate("low", true, utc("2026-12-04T16:00")) {
            Gate::Open(note) => assert!(note.contains("hotfix_bypasses_freeze"), "{note}"),
            closed => panic!("{closed:?}"),
        }
        assert!(matches!(
            cal.gate("low", false, utc("2026-12-04T16:00")),
            Gate::Closed { .. }
        ));
        assert!(matches!(
            cal.gate("low", false, utc("2026-12-04T14:59")),
            Gate::Open(_)
        ));
    }

    #[test]
    fn bad_calendars_are_named() {
        for (with, expected) in [
            (
                json!({ "windows": [{ "days": ["fri"], "hours": "17:00-09:00" }] }),
                "windows[0].hours",
            ),
            (
                json!({ "windows": [{ "days": ["funday"] }] }),
                "windows[0].days",
            ),
            (
                json!({ "windows": [{ "hours": "9-17" }] }),
                "windows[0].hours",
            ),
            (
                json!({ "freeze": [{ "from": "2026-13-01", "to": "2027-01-01" }] }),
                "freeze[0].from",
            ),
            (
                json!({ "freeze": [{ "from": "2027-01-02", "to": "2027-01-01" }] }),
                "freeze[0]",
            ),
            (json!({ "timezone": "Europe/Paris" }), "timezone"),
            (json!({ "window_risks": ["urgent"] }), "window_risks"),
        ] {
            let error = Calendar::from_map(with.as_object().expect("mapping"))
                .expect_err("invalid calendar");
            assert!(error.contains(expected), "{error} should name {expected}");
        }
    }
}
