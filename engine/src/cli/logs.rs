//! `cairn logs RUN [STEP]`: stored step logs, optionally followed until the run ends.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::settings::Settings;

#[derive(clap::Args)]
pub struct LogsArgs {
    pub run: i64,
    pub step: Option<String>,
    /// Keep printing new lines until the run finishes.
    #[arg(long, short)]
    pub follow: bool,
}

pub async fn logs(home: Option<PathBuf>, args: &LogsArgs) -> Result<()> {
    let store = Settings::resolve(home, None)?.open_store()?;
    let run = store.run(args.run)?;
    if let Some(step) = &args.step {
        if !store.steps(run.id)?.iter().any(|s| &s.step_id == step) {
            anyhow::bail!("run {} has no step `{step}`", run.id);
        }
    }
    let mut after = 0;
    let print_new = |after: &mut i64| -> Result<()> {
        for line in store.logs(run.id, args.step.as_deref(), *after)? {
            *after = line.seq;
            if args.step.is_some() {
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
