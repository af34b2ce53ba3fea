//! The `cairn` binary: parses the command line and hands off to `cli`; the only place that
//! uses `anyhow` and decides exit codes.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, EXIT_ERROR, EXIT_INVALID};

fn main() -> ExitCode {
    restore_sigpipe();
    default_decode_threads();
    if let Some(message) = missing_cpu_features() {
        eprintln!("error: {message}");
        return ExitCode::from(EXIT_ERROR);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            if is_invalid_input(&error) {
                ExitCode::from(EXIT_INVALID)
            } else {
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}

/// Errors in what the user asked for (exit 2), as opposed to failures doing it (exit 3): an
/// invalid workflow, a run or step that does not exist, a bad configuration file.
fn is_invalid_input(error: &anyhow::Error) -> bool {
    use cairn_engine::store::Error as StoreError;
    error.chain().any(|cause| {
        cause.is::<cli::Invalid>()
            || cause.is::<cairn_engine::pipeline::Error>()
            || cause.is::<cairn_engine::llm::ConfigError>()
            || cause.is::<cairn_engine::retention::ConfigError>()
            || cause.is::<cairn_engine::store::LocationError>()
            || matches!(
                cause.downcast_ref::<StoreError>(),
                Some(StoreError::RunNotFound(_) | StoreError::StepNotFound { .. })
            )
    })
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = cli.home;
    match &cli.command {
        Command::Run(args) => cli::run::run(home, args).await,
        Command::Resume(args) => cli::run::resume(home, args).await,
        Command::Status(args) => cli::status::status(home, args).map(|()| ExitCode::SUCCESS),
        Command::Runs(args) => cli::status::list(home, args).map(|()| ExitCode::SUCCESS),
        Command::Logs(args) => cli::logs::logs(home, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => cli::serve::serve(home, args).await,
        Command::Rollback(args) => cli::rollback::rollback(home, args).await,
        Command::Promote(args) => cli::promote::promote(home, args).await,
        Command::Approve(args) => cli::approve::approve(home, args).await,
        Command::Cancel(args) => cli::cancel::cancel(home, args).await,
        Command::Validate(args) => Ok(cli::validate::validate(args)),
        Command::Graph(args) => Ok(cli::graph::graph(args)),
        Command::Convert(args) => Ok(cli::convert::convert(args)),
        Command::Bundle(args) => cli::bundle::bundle(home, args).map(|()| ExitCode::SUCCESS),
        Command::Secret(args) => cli::secret::secret(home, args).map(|()| ExitCode::SUCCESS),
        Command::Analyze(args) => cli::analyze::analyze(home, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Tests(args) => cli::tests::tests(home, args).map(|()| ExitCode::SUCCESS),
        Command::Risk(args) => cli::risk::risk(home, args).map(|()| ExitCode::SUCCESS),
        Command::Token(args) => cli::token::token(home, args),
        Command::Costs(args) => cli::costs::costs(home, args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => cli::bench::bench(home, args)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Doctor(args) => cli::doctor::doctor(home, args),
        Command::Model(args) => cli::model::model(args).await.map(|()| ExitCode::SUCCESS),
        Command::Artifacts(args) => {
            cli::artifacts::artifacts(home, args).map(|()| ExitCode::SUCCESS)
        }
        Command::Gc(args) => cli::gc::gc(home, args).map(|()| ExitCode::SUCCESS),
        Command::Worker(args) => cli::worker::worker(home, args).await,
    }
}

/// The release build targets x86-64-v3 (AVX2, FMA) so the local model's kernels vectorize.
/// On an older CPU, say so instead of dying on an illegal instruction later.
fn missing_cpu_features() -> Option<String> {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    {
        if !std::arch::is_x86_feature_detected!("avx2")
            || !std::arch::is_x86_feature_detected!("fma")
        {
            return Some(
                "this build of cairn needs a CPU with AVX2 and FMA (x86-64-v3); rebuild with \
                 CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS='' for a portable, slower build"
                    .into(),
            );
        }
    }
    None
}

/// `cairn runs | head` should end quietly like any Unix tool, not panic on a closed pipe.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL installs no
    // Rust code as a handler.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// candle's decode pool spin-waits; on a small machine that shares its cores with steps and
/// builds, one decode thread is several times faster than two (see ARCHITECTURE.md,
/// "Local model"). A user's explicit `CANDLE_NUM_THREADS` wins.
#[allow(unsafe_code)]
fn default_decode_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called first thing in main, before the runtime or any other thread exists,
        // so nothing can read the environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}
