//! `cairn logs RUN [STEP]`: stored step logs, optionally followed until the run ends.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use cairn_engine::store::{Error as StoreError, StepState};

use super::settings::Settings;

#[derive(clap::Args)]
pub struct LogsArgs {
    pub run: i64,
    pub step: Option<String>,
    /// Keep printing new lines until the run finishes.
    #[arg(long, short)]
    pub follow: bool,
    /// One JSON object per line: seq, step_id, attempt, stream, line, at.
    #[arg(long)]
    pub json: bool,
}

pub async fn logs(home: Option<PathBuf>, args: &LogsArgs) -> Result<()> {
    let store = Settings::resolve(home, None)?.open_store()?;
    let run = store.run(args.run)?;
    if let Some(step) = &args.step {
        let steps = store.steps(run.id)?;
        let Some(record) = steps.iter().find(|s| &s.step_id == step) else {
            return Err(StoreError::StepNotFound {
                run_id: run.id,
                step_id: step.clone(),
            }
            .into());
        };
        // A step that never ran has no log; say why instead of printing nothing.
        if matches!(record.state, StepState::Skipped | StepState::Cancelled) && record.attempts == 0
        {
            let reason = super::status::step_reasons(&store, run.id)?
                .remove(step)
                .unwrap_or_else(|| "no reason was recorded".to_owned());
            eprintln!(
                "step `{step}` of run {} was {} ({reason}); it never ran, so it has no log",
                run.id, record.state
            );
            return Ok(());
        }
    }
    let mut after = 0;
    let print_new = |after: &mut i64| -> Result<()> {
        for line in store.logs(run.id, args.step.as_deref(), *after)? {
            *after = line.seq;
            if args.json {
                println!("{}", serde_json::to_string(&line)?);
            } else if args.step.is_some() {
                println!("{}", line.line);
            } else {
                println!("{} | {}", line.step_id, line.line);
            }
        }
        Ok(())
    };
    loop {
        print_new(&mut after)?;
        if !args.follow {
            return Ok(());
        }
        if store.run(run.id)?.state.is_terminal() {
            // One more read: lines flushed between the last read and the state change.
            return print_new(&mut after);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
