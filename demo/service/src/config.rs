//! The service's settings from its environment; a malformed value stops it with a message
//! rather than being ignored, so a bad deployment is obvious at once.

pub struct Config {
    pub port: u16,
    pub version: String,
    /// Share of `/` requests answered 500, 0.0–1.0.
    pub error_rate: f64,
    pub extra_latency_ms: u64,
}

impl Config {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let port = match env("PORT") {
            Some(text) => text
                .trim()
                .parse()
                .map_err(|_| format!("PORT `{text}` is not a port number"))?,
            None => 8080,
        };
        let error_rate = match env("DEMO_ERROR_RATE") {
            Some(text) => {
                let rate: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("DEMO_ERROR_RATE `{text}` is not a number"))?;
                if !(0.0..=1.0).contains(&rate) {
                    return Err(format!("DEMO_ERROR_RATE `{text}` must be between 0 and 1"));
                }
                rate
            }
            None => 0.0,
        };
        let extra_latency_ms = match env("DEMO_EXTRA_LATENCY_MS") {
            Some(text) => text.trim().parse().map_err(|_| {
                format!("DEMO_EXTRA_LATENCY_MS `{text}` is not a whole number of milliseconds")
            })?,
            None => 0,
        };
        let version = env("DEMO_VERSION")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
        Ok(Config {
            port,
            version,
            error_rate,
            extra_latency_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let config = Config::from_env(|_| None).expect("defaults");
        assert_eq!(
            (config.port, config.error_rate, config.extra_latency_ms),
            (8080, 0.0, 0)
        );
        assert!(Config::from_env(|k| (k == "DEMO_ERROR_RATE").then(|| "2".into())).is_err());
        assert!(Config::from_env(|k| (k == "PORT").then(|| "http".into())).is_err());
    }
}
