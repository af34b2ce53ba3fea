//! The live terminal view of a running pipeline: one line per step with its state and
//! duration on a terminal, plain transition lines otherwise; step logs interleaved above.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use cairn_engine::exec::RunEvent;
use cairn_engine::store::{RunState, StepState};

pub struct ViewOptions {
    pub show_logs: bool,
}

/// Consumes run events until the channel closes. Output goes to stderr (data goes to stdout).
pub async fn watch(
    mut events: mpsc::UnboundedReceiver<RunEvent>,
    step_ids: Vec<String>,
    options: ViewOptions,
) {
    let live = std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if live {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let width = step_ids.iter().map(String::len).max().unwrap_or(4);
    let mut bars: HashMap<String, (ProgressBar, Option<Instant>)> = HashMap::new();
    if live {
        for id in &step_ids {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style("  {prefix} {msg}"));
            bar.set_prefix(format!("{id:<width$}"));
            bar.set_message("pending");
            bars.insert(id.clone(), (bar, None));
        }
    }
    let print = |line: String| {
        if live {
            multi.suspend(|| eprintln!("{line}"));
        } else {
            eprintln!("{line}");
        }
    };
    while let Some(event) = events.recv().await {
        match event {
            RunEvent::Log(line) if options.show_logs => {
                if bars.is_empty() {
                    print(format!(
                        "run {} {} | {}",
                        line.run_id, line.step_id, line.line
                    ));
                } else {
                    print(format!("{:>width$} | {}", line.step_id, line.line));
                }
            }
            RunEvent::Log(_) => {}
            RunEvent::Step {
                run_id,
                step_id,
                state,
                attempt,
                detail,
            } => {
                let attempt_text = attempt
                    .map(|a| format!(" (attempt {a})"))
                    .unwrap_or_default();
                let detail_text = detail.map(|d| format!(": {d}")).unwrap_or_default();
                if let Some((bar, started)) = bars.get_mut(&step_id) {
                    match state {
                        StepState::Running => {
                            *started = Some(Instant::now());
                            bar.set_style(style("{spinner} {prefix} running{msg} {elapsed}"));
                            bar.set_message(attempt_text);
                            bar.enable_steady_tick(Duration::from_millis(120));
                        }
                        StepState::WaitingRetry => {
                            bar.disable_steady_tick();
                            bar.set_style(style("{prefix} {msg}"));
                            bar.set_message(format!(
                                "{} waiting to retry{detail_text}",
                                mark(state)
                            ));
                        }
                        _ => {
                            let took = started
                                .map(|s| format!(" in {:.1}s", s.elapsed().as_secs_f64()))
                                .unwrap_or_default();
                            bar.set_style(style("{prefix} {msg}"));
                            bar.finish_with_message(format!(
                                "{} {}{took}{detail_text}",
                                mark(state),
                                state
                            ));
                        }
                    }
                } else {
                    print(format!(
                        "run {run_id} {step_id}: {state}{attempt_text}{detail_text}"
                    ));
                }
            }
            RunEvent::Finished {
                run_id,
                state,
                reason,
            } => {
                let reason = reason.map(|r| format!(": {r}")).unwrap_or_default();
                print(format!("run {run_id} {}{reason}", finished_word(state)));
            }
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn mark(state: StepState) -> &'static str {
    match state {
        StepState::Succeeded => "✓",
        StepState::Failed => "✗",
        StepState::Skipped => "↷",
        StepState::Cancelled => "⊘",
        StepState::WaitingRetry => "↻",
        StepState::Pending | StepState::Running => "•",
    }
}

fn finished_word(state: RunState) -> &'static str {
    match state {
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::Cancelled => "was cancelled",
        RunState::Running => "is still running",
    }
}
