//! `cairn cancel RUN`: asks the engine driving the run to stop it; if no engine is driving it
//! (it was interrupted), cancels it here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::settings::Settings;

#[derive(clap::Args)]
pub struct CancelArgs {
    pub run: i64,
}

pub async fn cancel(home: Option<PathBuf>, args: &CancelArgs) -> Result<ExitCode> {
    let settings = Settings::resolve(home, None)?;
    let engine = settings.engine()?;
    let run = engine.store().run(args.run)?;
    if run.state.is_terminal() {
        bail!("run {} is already finished ({})", run.id, run.state);
    }
    engine
        .store()
        .write(|txn| txn.request_cancel(run.id, engine.owner().as_str()))?;
    if engine.resumable_runs()?.iter().any(|r| r.id == run.id) {
        // Nobody is driving it: drive it ourselves so that its cancellation completes.
        let state = engine.drive(run.id, None).await?;
        eprintln!("run {} {state}", run.id);
    } else {
        eprintln!(
            "cancellation of run {} requested; its engine stops it within a second",
            run.id
        );
    }
    Ok(ExitCode::SUCCESS)
}
