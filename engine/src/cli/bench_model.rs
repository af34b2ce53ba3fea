//! `cairn bench model`: the local model's speed (prompt processing of 512 tokens, generation
//! of 128 tokens from an empty context and after 512), its load time and the process's peak
//! memory — all measured here, never quoted. With `--reference PATH-TO-llama-bench` the same
//! GGUF is measured by llama.cpp's `llama-bench` too, interleaved with Cairn's rounds (A, B,
//! A, B, …) so that both sides see the same machine load, and the ratios are printed beside
//! the load averages of the rounds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use cairn_models::bench::BenchReport;

#[derive(clap::Args)]
pub struct BenchModelArgs {
    /// The model's threads: prefill, and decode of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K
    /// and Q6_K weights (Cairn's own kernels); other formats decode on CANDLE_NUM_THREADS,
    /// default 1.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// A GGUF file (default: CAIRN_MODEL or the model cache).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// llama.cpp's `llama-bench` binary: measure the same file with it, interleaved.
    #[arg(long, value_name = "LLAMA_BENCH")]
    pub reference: Option<PathBuf>,
    /// Interleaved rounds (Cairn then the reference, each round).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(long)]
    pub json: bool,
}

/// One side's figures for one round.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub pp512_tokens_per_s: f64,
    pub tg128_tokens_per_s: f64,
    /// `None` when the reference cannot measure at depth (older llama-bench without `-d`).
    pub tg128_at_512_tokens_per_s: Option<f64>,
    /// Seconds from opening the file to the end of the first evaluation of a one-token
    /// prompt, as llama.cpp counts its load time (its `llama-simple`, beside `llama-bench`,
    /// prints it; `None` when that tool is not there).
    pub load_seconds: Option<f64>,
    /// Peak resident memory of the process that ran the model.
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// 1-minute load average before the round's first side ran.
    pub load_average: Option<f64>,
    pub cairn: Figures,
    pub reference: Option<Figures>,
}

#[derive(Debug, Serialize)]
pub struct ModelBenchReport {
    pub model: String,
    pub architecture: String,
    pub prefill_threads: usize,
    pub decode_threads: usize,
    pub rounds: Vec<Round>,
}

pub async fn bench_model(args: &BenchModelArgs) -> Result<()> {
    let path = match &args.model {
        Some(path) => path.clone(),
        None => cairn_models::default_model_path()?,
    };
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if let Some(reference) = &args.reference
        && !reference.is_file()
    {
        return Err(super::Invalid(format!(
            "--reference {}: no such file (give the path of llama.cpp's llama-bench)",
            reference.display()
        ))
        .into());
    }
    let threads = args.threads;
    // Cairn's kernels decode on the model's pool, so both sides decode at `threads` too
    // (only Q2_K, Q3_K and f16 weights decode on candle's pool, `CANDLE_NUM_THREADS`).
    let decode_threads = threads;
    eprintln!(
        "benchmarking {} ({threads} prefill threads, {decode_threads} decode threads), {} round(s){}",
        path.display(),
        args.rounds,
        if args.reference.is_some() {
            ", interleaved with llama-bench"
        } else {
            ""
        }
    );
    let mut rounds = Vec::new();
    let mut identity = None;
    for round in 1..=args.rounds {
        let load_average = load_average();
        eprintln!(
            "round {round}: cairn (load average {})",
            load_average.map_or("unknown".to_string(), |l| format!("{l:.2}"))
        );
        let model = path.clone();
        let report: BenchReport =
            tokio::task::spawn_blocking(move || cairn_models::bench::run(&model, threads))
                .await??;
        identity.get_or_insert((report.model.clone(), report.architecture.clone()));
        let cairn = Figures {
            pp512_tokens_per_s: report.pp512_tokens_per_s,
            tg128_tokens_per_s: report.tg128_tokens_per_s,
            tg128_at_512_tokens_per_s: Some(report.tg128_at_512_tokens_per_s),
            load_seconds: Some(report.load_seconds),
            peak_rss_bytes: own_peak_rss(),
        };
        let reference = match &args.reference {
            Some(binary) => {
                eprintln!("round {round}: llama-bench");
                Some(run_reference(binary, &path, threads, decode_threads)?)
            }
            None => None,
        };
        rounds.push(Round {
            load_average,
            cairn,
            reference,
        });
    }
    let (model, architecture) = identity.unwrap_or_default();
    let report = ModelBenchReport {
        model,
        architecture,
        prefill_threads: threads,
        decode_threads,
        rounds,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn render(report: &ModelBenchReport) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "model {} ({}), prefill {} threads, decode {} threads\n",
        report.model, report.architecture, report.prefill_threads, report.decode_threads
    );
    let cairn: Vec<&Figures> = report.rounds.iter().map(|r| &r.cairn).collect();
    let reference: Vec<&Figures> = report
        .rounds
        .iter()
        .filter_map(|r| r.reference.as_ref())
        .collect();
    let loads: Vec<String> = report
        .rounds
        .iter()
        .map(|r| {
            r.load_average
                .map_or("?".to_string(), |l| format!("{l:.2}"))
        })
        .collect();
    let _ = writeln!(
        out,
        "medians of {} round(s); load averages {}",
        report.rounds.len(),
        loads.join(", ")
    );
    let header = if reference.is_empty() {
        format!("{:<18}{:>12}\n", "", "cairn")
    } else {
        format!(
            "{:<18}{:>12}{:>12}{:>8}\n",
            "", "cairn", "llama.cpp", "ratio"
        )
    };
    out.push_str(&header);
    type Figure = fn(&Figures) -> Option<f64>;
    let rows: [(&str, Figure); 5] = [
        ("pp512 t/s", |f| Some(f.pp512_tokens_per_s)),
        ("tg128 t/s", |f| Some(f.tg128_tokens_per_s)),
        ("tg128 @512 t/s", |f| f.tg128_at_512_tokens_per_s),
        ("load s", |f| f.load_seconds),
        ("peak RSS MB", |f| f.peak_rss_bytes.map(|b| b as f64 / 1e6)),
    ];
    for (label, get) in rows {
        let ours = median(cairn.iter().filter_map(|f| get(f)));
        let theirs = median(reference.iter().filter_map(|f| get(f)));
        let show = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
        if reference.is_empty() {
            let _ = writeln!(out, "{label:<18}{:>12}", show(ours));
        } else {
            // Speed: ours / theirs (≥ 1 is at least as fast). Cost: ours / theirs (≤ 1.5 is
            // the target for memory and load).
            let ratio = match (ours, theirs) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "—".to_string(),
            };
            let _ = writeln!(
                out,
                "{label:<18}{:>12}{:>12}{:>8}",
                show(ours),
                show(theirs),
                ratio
            );
        }
    }
    out
}

/// The middle value (the upper of the two middle ones for an even count).
pub(super) fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// One entry of `llama-bench -o json`.
#[derive(Deserialize)]
struct LlamaBenchEntry {
    n_prompt: u64,
    n_gen: u64,
    #[serde(default)]
    n_depth: u64,
    avg_ts: f64,
}

/// Runs llama-bench three times (prefill at `threads`, decode at `decode_threads` from empty
/// and at depth 512) and reads its JSON; the largest peak RSS of its runs is its memory.
fn run_reference(
    binary: &Path,
    model: &Path,
    threads: usize,
    decode_threads: usize,
) -> Result<Figures> {
    let peak_rss = std::cell::Cell::new(None::<u64>);
    let bench = |args: &[&str], threads: usize| -> Result<Option<Vec<LlamaBenchEntry>>> {
        let started = Instant::now();
        let mut command = Command::new(binary);
        command
            .arg("-m")
            .arg(model)
            .args(["-t", &threads.to_string(), "-r", "3", "-o", "json"])
            .args(args);
        let (output, peak) = run_watching_rss(command)
            .with_context(|| format!("failed to run {}", binary.display()))?;
        peak_rss.set(peak_rss.get().max(peak));
        tracing::debug!(elapsed = ?started.elapsed(), ?args, "llama-bench ran");
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            // An older llama-bench lacks `-d`; that figure is then not measured.
            if args.contains(&"-d") {
                return Ok(None);
            }
            bail!(
                "{} {} failed ({}): {}",
                binary.display(),
                args.join(" "),
                output.status,
                stderr.lines().last().unwrap_or("")
            );
        }
        let entries: Vec<LlamaBenchEntry> = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("{} did not print llama-bench JSON", binary.display()))?;
        Ok(Some(entries))
    };
    let rate = |entries: &[LlamaBenchEntry], prompt: u64, generated: u64, depth: u64| {
        entries
            .iter()
            .find(|e| e.n_prompt == prompt && e.n_gen == generated && e.n_depth == depth)
            .map(|e| e.avg_ts)
    };
    let pp = bench(&["-p", "512", "-n", "0"], threads)?.unwrap_or_default();
    let tg = bench(&["-p", "0", "-n", "128"], decode_threads)?.unwrap_or_default();
    let deep = bench(&["-p", "0", "-n", "128", "-d", "512"], decode_threads)?;
    let Some(pp512) = rate(&pp, 512, 0, 0) else {
        bail!("llama-bench printed no pp512 figure");
    };
    let Some(tg128) = rate(&tg, 0, 128, 0) else {
        bail!("llama-bench printed no tg128 figure");
    };
    Ok(Figures {
        pp512_tokens_per_s: pp512,
        tg128_tokens_per_s: tg128,
        tg128_at_512_tokens_per_s: deep.and_then(|d| rate(&d, 0, 128, 512)),
        load_seconds: reference_load_seconds(binary, model)?,
        peak_rss_bytes: peak_rss.get(),
    })
}

/// llama.cpp's load time of `model`: llama-bench does not report one, so `llama-simple` from
/// the same build (beside `llama_bench`) generates one token after a one-token prompt and its
/// `load time` line is read — from loading to the end of the first evaluation, as llama.cpp
/// counts it. `None` when there is no `llama-simple` beside it.
fn reference_load_seconds(llama_bench: &Path, model: &Path) -> Result<Option<f64>> {
    let simple = llama_bench.with_file_name("llama-simple");
    if !simple.is_file() {
        tracing::warn!(
            "{} not found: the reference's load time is not measured",
            simple.display()
        );
        return Ok(None);
    }
    let output = Command::new(&simple)
        .arg("-m")
        .arg(model)
        .args(["-n", "1", "Hello"])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("failed to run {}", simple.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            simple.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    match load_time_ms(&stderr) {
        Some(ms) => Ok(Some(ms / 1000.0)),
        None => bail!("{} printed no `load time` line", simple.display()),
    }
}

/// The milliseconds of llama.cpp's `llama_perf_context_print: load time = 123.45 ms` line.
fn load_time_ms(log: &str) -> Option<f64> {
    let line = log
        .lines()
        .find(|l| l.contains("llama_perf_context_print") && l.contains("load time"))?;
    let value = line.split('=').nth(1)?.trim();
    value.strip_suffix("ms")?.trim().parse().ok()
}

/// Runs `command` to its end, reading its peak resident set (`VmHWM`) from `/proc` every
/// 10 ms. (`getrusage(RUSAGE_CHILDREN)` would report this process's own size: Linux counts a
/// child's memory from the fork, when it still shares the parent's, up to its exec.)
fn run_watching_rss(mut command: Command) -> std::io::Result<(std::process::Output, Option<u64>)> {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Both pipes drain on threads of their own, so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = None;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_path)
            .ok()
            .and_then(|status| vm_hwm_kib(&status))
        {
            peak = peak.max(Some(kib * 1024));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let output = std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    Ok((output, peak))
}

/// `VmHWM` of a `/proc/PID/status` text, in KiB.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's peak resident set (`VmHWM`).
fn own_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_hwm_kib(&status).map(|kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llama_cpps_load_time_line() {
        let log = "llama_perf_sampler_print:    sampling time =       0.02 ms\n\
                   llama_perf_context_print:        load time =     123.45 ms\n\
                   llama_perf_context_print: prompt eval time =       8.00 ms /     1 tokens\n";
        assert_eq!(load_time_ms(log), Some(123.45));
        assert_eq!(load_time_ms("no perf lines here"), None);
        assert_eq!(
            load_time_ms("llama_perf_context_print: load time = soon"),
            None
        );
    }
}
