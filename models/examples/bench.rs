//! Prints `cairn_models::bench::run` as JSON, with this process's peak resident memory:
//! `cargo run -p cairn-models --release --example bench -- [THREADS] [MODEL]` (defaults:
//! 2 threads, the default model).

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let threads = args.next().map(|t| t.parse()).transpose()?.unwrap_or(2);
    let path = match args.next() {
        Some(path) => path.into(),
        None => cairn_models::default_model_path()?,
    };
    let report = cairn_models::bench::run(&path, threads)?;
    let mut json = serde_json::to_value(&report)?;
    json["peak_rss_mb"] = peak_rss_mb().into();
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// `VmHWM` of /proc/self/status in MB (0 where /proc is not available).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
