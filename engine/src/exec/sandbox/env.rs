//! A step's environment: a few basics of the engine's (where programs and toolchains are,
//! the locale) and what the caller gives (the documented `CAIRN_*` variables, the workflow's
//! and step's `env:`), never the rest of Cairn's own environment, which holds API keys.

/// Passed through from the engine's environment when set.
const PASSED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    // Where rustup and cargo keep toolchains; without them a rustup `cargo` cannot start.
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The basics, then `given` (which wins). A sandboxed step gets its private `/tmp` as
/// `TMPDIR` and as the cache home, since its home directory is read-only.
pub fn build(given: &[(String, String)], sandboxed: bool) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(key, _)| PASSED.contains(&key.as_str()) || key.starts_with("LC_"))
        .collect();
    if !env.iter().any(|(key, _)| key == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if sandboxed {
        env.push(("TMPDIR".into(), "/tmp".into()));
        env.push(("XDG_CACHE_HOME".into(), "/tmp/.cache".into()));
    }
    for (key, value) in given {
        env.retain(|(existing, _)| existing != key);
        env.push((key.clone(), value.clone()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_basics_and_given_variables_reach_a_step() {
        // The test process's own environment stands in for Cairn's: whatever it holds beyond
        // the basics (cargo sets many CARGO_* variables for tests) must not appear.
        let given = vec![
            ("CAIRN_RUN_ID".to_string(), "7".to_string()),
            ("PATH".to_string(), "/custom/bin".to_string()),
        ];
        let env = build(&given, true);
        for (key, _) in &env {
            assert!(
                PASSED.contains(&key.as_str())
                    || key.starts_with("LC_")
                    || ["CAIRN_RUN_ID", "TMPDIR", "XDG_CACHE_HOME"].contains(&key.as_str()),
                "unexpected variable {key}"
            );
        }
        let path: Vec<_> = env.iter().filter(|(k, _)| k == "PATH").collect();
        assert_eq!(path, [&("PATH".to_string(), "/custom/bin".to_string())]);
        assert!(env.contains(&("CAIRN_RUN_ID".into(), "7".into())));
        assert!(!env.iter().any(|(k, _)| k == "CARGO_MANIFEST_DIR"));
    }
}
