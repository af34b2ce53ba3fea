//! Step log lines: batched into the store by a background task, and echoed to whoever is
//! watching the run.
//!
//! Logs are not state: they are written in their own transactions every [`FLUSH_INTERVAL`] so
//! that a chatty step does not cost one durable commit per line.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::{Fence, LogLine, Store, now_ms};

const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Where an attempt writes its log lines.
#[derive(Clone)]
pub struct LogSink {
    run_id: i64,
    step_id: String,
    attempt: u32,
    sender: mpsc::UnboundedSender<LogLine>,
    echo: Option<mpsc::UnboundedSender<LogLine>>,
}

impl LogSink {
    pub fn line(&self, stream: &'static str, line: impl Into<String>) {
        let line = LogLine {
            run_id: self.run_id,
            step_id: self.step_id.clone(),
            attempt: self.attempt,
            stream,
            line: line.into(),
            at: now_ms(),
        };
        // Watchers see the line at once; the store gets it with the next batch.
        if let Some(echo) = &self.echo {
            let _ = echo.send(line.clone());
        }
        // The writer only goes away when the engine is shutting down; lines after that are
        // lost with it, which is fine for logs.
        let _ = self.sender.send(line);
    }
}

/// Owns the writer task; dropping every sink and calling [`LogWriter::finish`] flushes it.
pub struct LogWriter {
    sender: mpsc::UnboundedSender<LogLine>,
    echo: Option<mpsc::UnboundedSender<LogLine>>,
    task: tokio::task::JoinHandle<()>,
}

impl LogWriter {
    /// `echo` receives every line as it arrives (the terminal view). With a `fence`, lines are
    /// stored only while no other engine has claimed the run since.
    pub fn start(
        store: Store,
        echo: Option<mpsc::UnboundedSender<LogLine>>,
        fence: Option<Fence>,
    ) -> LogWriter {
        let (sender, mut receiver) = mpsc::unbounded_channel::<LogLine>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                let first = receiver.recv().await;
                let Some(first) = first else { break };
                batch.push(first);
                tokio::time::sleep(FLUSH_INTERVAL).await;
                while let Ok(line) = receiver.try_recv() {
                    batch.push(line);
                }
                let lines = std::mem::take(&mut batch);
                let store = store.clone();
                let fence = fence.clone();
                let written =
                    tokio::task::spawn_blocking(move || store.append_logs(&lines, fence.as_ref()))
                        .await;
                if let Ok(Err(error)) = written {
                    tracing::warn!(%error, "failed to store step log lines");
                }
            }
        });
        LogWriter { sender, echo, task }
    }

    pub fn sink(&self, run_id: i64, step_id: &str, attempt: u32) -> LogSink {
        LogSink {
            run_id,
            step_id: step_id.to_string(),
            attempt,
            sender: self.sender.clone(),
            echo: self.echo.clone(),
        }
    }

    pub async fn finish(self) {
        drop(self.sender);
        let _ = self.task.await;
    }
}
