//! The frame every dashboard page shares: navigation, the sign-out form, the stylesheet.

use maud::{DOCTYPE, Markup, html};

/// A whole page. `csrf` is the session's CSRF token when signed in (for the sign-out form).
pub fn page(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Cairn" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header {
                    nav aria-label="Main" {
                        a.brand href="/" { "Cairn" }
                        a href="/" { "Runs" }
                        a href="/deployments" { "Deployments" }
                        a href="/costs" { "Costs" }
                        a href="/flaky" { "Flaky tests" }
                        a href="/test-proposals" { "Test proposals" }
                        @if let Some(csrf) = csrf {
                            form.signout method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A state as a labelled badge (the colour is never the only cue: the word is shown).
pub fn badge(state: &str) -> Markup {
    html! { span class={"badge state-" (state)} { (state) } }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A route for people: `tests full · build standard · deploy canary · monitor 30 min`.
pub fn route_text(route: &serde_json::Value) -> String {
    match route {
        serde_json::Value::Object(parts) => {
            // The pipeline's order, whatever order the map keeps.
            const ORDER: [&str; 4] = ["tests", "build", "deploy", "monitor_minutes"];
            let mut parts: Vec<_> = parts.iter().collect();
            parts
                .sort_by_key(|(key, _)| ORDER.iter().position(|k| k == key).unwrap_or(ORDER.len()));
            parts
                .into_iter()
                .map(|(key, value)| {
                    let value = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_string);
                    match key.strip_suffix("_minutes") {
                        Some(key) => format!("{key} {value} min"),
                        None => format!("{key} {value}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(" · ")
        }
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

pub fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::route_text;

    #[test]
    fn routes_read_in_the_pipeline_s_order() {
        let route = serde_json::json!({"build": "standard", "deploy": "canary", "monitor_minutes": 30, "tests": "full"});
        assert_eq!(
            route_text(&route),
            "tests full · build standard · deploy canary · monitor 30 min"
        );
        assert_eq!(route_text(&serde_json::json!("fast")), "fast");
    }
}
