//! What `cairn doctor` checks of the machine it runs on, in plain words: the CPU features the
//! build needs, free disk under `$CAIRN_HOME`, a Docker engine and HAProxy (for the build and
//! deploy agents), the local model (present, a GGUF, and the checksum its bundle recorded),
//! and, when run from an unpacked `cairn bundle`, every file of the bundle's manifest.
//!
//! Each check prints one line: `ok`, `missing` (Cairn works without it, with less) or
//! `FAILED` (Cairn cannot work as configured); only `FAILED` makes the doctor exit non-zero.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::bundle::{MANIFEST, check_gguf, configured_model, sha256_file};
use super::settings::Settings;

/// Below this much free space a run's checkout, logs and images may not fit.
const MIN_FREE_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Not needed for everything: said, not fatal.
    Missing,
    Failed,
}

fn say(verdict: Verdict, what: &str, words: impl AsRef<str>) -> Verdict {
    let label = match verdict {
        Verdict::Ok => "ok     ",
        Verdict::Missing => "missing",
        Verdict::Failed => "FAILED ",
    };
    println!("{label} {what:<9} {}", words.as_ref());
    verdict
}

/// Every machine check; whether none failed.
pub fn check_target(settings: &Settings, bundle: Option<&Path>) -> bool {
    let verdicts = [
        cpu(),
        disk(&settings.home),
        docker(),
        haproxy(),
        model(settings, bundle),
        match bundle {
            Some(dir) => bundle_files(dir),
            None => Verdict::Ok,
        },
    ];
    !verdicts.contains(&Verdict::Failed)
}

/// The bundle this binary was unpacked from (`<dir>/bin/cairn` beside `<dir>/MANIFEST.sha256`).
pub fn bundle_of_this_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?;
    dir.join(MANIFEST).is_file().then(|| dir.to_path_buf())
}

fn cpu() -> Verdict {
    #[cfg(target_arch = "x86_64")]
    {
        let missing: Vec<&str> = [
            ("AVX2", std::arch::is_x86_feature_detected!("avx2")),
            ("FMA", std::arch::is_x86_feature_detected!("fma")),
        ]
        .iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| *name)
        .collect();
        if missing.is_empty() {
            return say(
                Verdict::Ok,
                "cpu",
                "AVX2 and FMA present (the local model's kernels use them)",
            );
        }
        let built_for_them = cfg!(target_feature = "avx2");
        let verdict = if built_for_them {
            Verdict::Failed
        } else {
            Verdict::Missing
        };
        say(
            verdict,
            "cpu",
            format!(
                "this CPU lacks {}: {}",
                missing.join(" and "),
                if built_for_them {
                    "this build of cairn cannot run here; use a portable build"
                } else {
                    "the local model runs, slowly"
                }
            ),
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    say(Verdict::Ok, "cpu", "not x86-64: no special features needed")
}

fn disk(home: &Path) -> Verdict {
    // The home may not exist yet: measure the nearest directory that does.
    let mut probe = home.to_path_buf();
    while !probe.exists() {
        match probe.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => probe = parent.to_path_buf(),
            _ => {
                probe = PathBuf::from(".");
                break;
            }
        }
    }
    match nix::sys::statvfs::statvfs(&probe) {
        Ok(stats) => {
            let free = stats
                .blocks_available()
                .saturating_mul(stats.fragment_size());
            let shown = bytesize::ByteSize::b(free).display().iec().to_string();
            if free < MIN_FREE_BYTES {
                say(
                    Verdict::Failed,
                    "disk",
                    format!(
                        "only {shown} free under {}: runs need room for checkouts, logs and images (at least 1 GiB)",
                        probe.display()
                    ),
                )
            } else {
                say(
                    Verdict::Ok,
                    "disk",
                    format!("{shown} free under {}", probe.display()),
                )
            }
        }
        Err(error) => say(
            Verdict::Failed,
            "disk",
            format!(
                "cannot tell the free space under {}: {error}",
                probe.display()
            ),
        ),
    }
}

/// A Docker engine answering `GET /_ping` on its socket (or `DOCKER_HOST`).
fn docker() -> Verdict {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    let timeout = Some(Duration::from_secs(3));
    let answer = if let Some(path) = host.strip_prefix("unix://") {
        std::os::unix::net::UnixStream::connect(path).and_then(|mut stream| {
            stream.set_read_timeout(timeout)?;
            stream.set_write_timeout(timeout)?;
            stream.write_all(request)?;
            let mut text = String::new();
            stream.take(4096).read_to_string(&mut text)?;
            Ok(text)
        })
    } else if let Some(address) = host.strip_prefix("tcp://") {
        std::net::TcpStream::connect(address).and_then(|mut stream| {
            stream.set_read_timeout(timeout)?;
            stream.write_all(request)?;
            let mut text = String::new();
            stream.take(4096).read_to_string(&mut text)?;
            Ok(text)
        })
    } else {
        Err(std::io::Error::other(format!(
            "DOCKER_HOST={host} is neither unix:// nor tcp://"
        )))
    };
    match answer {
        Ok(text) if text.starts_with("HTTP/1.") && text.contains(" 200 ") => say(
            Verdict::Ok,
            "docker",
            format!("an engine answers at {host}"),
        ),
        Ok(text) => say(
            Verdict::Missing,
            "docker",
            format!(
                "{host} answered `{}`: the build and deploy agents need a working Docker engine",
                text.lines().next().unwrap_or("")
            ),
        ),
        Err(error) => say(
            Verdict::Missing,
            "docker",
            format!(
                "no engine at {host} ({error}): the build and deploy agents need one (Debian: `apt-get install docker.io`); other steps run without it"
            ),
        ),
    }
}

fn haproxy() -> Verdict {
    match std::process::Command::new("haproxy").arg("-v").output() {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            say(
                Verdict::Ok,
                "haproxy",
                text.lines().next().unwrap_or("present").trim(),
            )
        }
        _ => say(
            Verdict::Missing,
            "haproxy",
            "not found on PATH: the deploy agent needs it to shift traffic (Debian: `apt-get install haproxy`)",
        ),
    }
}

fn model(settings: &Settings, bundle: Option<&Path>) -> Verdict {
    // In a bundle the model is its own, checked against the manifest below.
    let bundled = bundle.and_then(|dir| {
        std::fs::read_dir(dir.join("models"))
            .ok()?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|ext| ext == "gguf"))
    });
    let path = match bundled
        .map(Ok)
        .unwrap_or_else(|| configured_model(settings))
    {
        Ok(path) => path,
        Err(error) => {
            return say(
                Verdict::Missing,
                "model",
                format!(
                    "no local model: {error:#}; the rules decide alone (`scripts/fetch-model.sh`, or a bundle's model)"
                ),
            );
        }
    };
    if let Err(error) = check_gguf(&path) {
        return say(Verdict::Failed, "model", format!("{error:#}"));
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let shown = bytesize::ByteSize::b(size).display().iec().to_string();
    say(
        Verdict::Ok,
        "model",
        format!("{} ({shown}, GGUF)", path.display()),
    )
}

/// Every file the bundle's manifest lists, present with its recorded SHA-256.
fn bundle_files(dir: &Path) -> Verdict {
    let manifest = match std::fs::read_to_string(dir.join(MANIFEST)) {
        Ok(text) => text,
        Err(error) => {
            return say(
                Verdict::Failed,
                "bundle",
                format!("cannot read {}: {error}", dir.join(MANIFEST).display()),
            );
        }
    };
    let mut problems = Vec::new();
    let mut checked = 0;
    for line in manifest.lines().filter(|line| !line.trim().is_empty()) {
        let Some((digest, name)) = line.split_once("  ") else {
            problems.push(format!(
                "a manifest line is not `<sha256>  <path>`: {line:?}"
            ));
            continue;
        };
        if name.starts_with('/') || name.split('/').any(|part| part == "..") {
            problems.push(format!(
                "the manifest names a path outside the bundle: {name}"
            ));
            continue;
        }
        checked += 1;
        match sha256_file(&dir.join(name)) {
            Ok(found) if found == digest => {}
            Ok(_) => problems.push(format!(
                "{name} differs from what was packed (checksum mismatch: damaged or changed)"
            )),
            Err(_) => problems.push(format!("{name} is missing")),
        }
    }
    if problems.is_empty() {
        say(
            Verdict::Ok,
            "bundle",
            format!("{checked} files match {} ({})", MANIFEST, dir.display()),
        )
    } else {
        say(Verdict::Failed, "bundle", problems.join("; "))
    }
}
