//! Step log lines: batched into the store by a background task, and echoed to whoever is
//! watching the run.
//!
//! Logs are not state: they are written in their own transactions every [`FLUSH_INTERVAL`] so
//! that a chatty step does not cost one durable commit per line. They are also bounded, so a
//! step printing 50 MB of `y` lines costs neither gigabytes of engine memory nor of database:
//!
//! - each attempt stores its first [`HEAD_LIMIT`] bytes and its last [`TAIL_LIMIT`] bytes
//!   (where errors usually are); between them one marker line says how much was left out;
//! - lines longer than [`MAX_LINE_BYTES`] are cut (see `process.rs`);
//! - a batch is at most [`MAX_BATCH_LINES`] lines, so a log transaction never holds the
//!   database's write lock for long and other engines get their turn;
//! - lines the store refused (a full disk) are counted, and the attempt's outcome says so
//!   ([`LogSink::settle`]): a step whose logs were lost does not report plain success.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::machine::Outcome;
use super::retry::FailureClass;
use crate::store::{LogFence, LogLine, Store, now_ms};

const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// How long a batch waits for an unreachable store before its lines count as lost.
const STORE_PATIENCE: Duration = Duration::from_secs(60);

/// Bytes of an attempt's output stored from its start.
pub const HEAD_LIMIT: usize = 1024 * 1024;
/// Bytes of an attempt's output stored from its end (kept in memory until the attempt ends).
pub const TAIL_LIMIT: usize = 256 * 1024;
/// Longest line stored; the reader cuts longer ones.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Most lines written in one transaction.
const MAX_BATCH_LINES: usize = 2_000;
/// What a line costs against the limits besides its text (its row and bookkeeping), so that
/// millions of empty lines are bounded too.
const LINE_OVERHEAD: usize = 64;

type AttemptKey = (i64, String, u32);

enum Message {
    Line(LogLine),
    /// Flush everything queued so far, then say whether any line of this attempt was lost.
    Settle {
        key: AttemptKey,
        reply: oneshot::Sender<Option<Loss>>,
    },
}

/// Lines of one attempt the store refused, and why.
#[derive(Debug, Clone)]
struct Loss {
    lines: u64,
    cause: String,
}

/// What one attempt has sent so far, for the head/tail limits.
#[derive(Default)]
struct Budget {
    head_used: usize,
    tail: VecDeque<LogLine>,
    tail_used: usize,
    skipped_lines: u64,
    skipped_bytes: u64,
}

/// Where an attempt writes its log lines.
#[derive(Clone)]
pub struct LogSink {
    run_id: i64,
    step_id: String,
    attempt: u32,
    sender: mpsc::UnboundedSender<Message>,
    echo: Option<mpsc::UnboundedSender<LogLine>>,
    budget: Arc<Mutex<Budget>>,
    /// Secret values (and their encodings) replaced before a line is shown or stored.
    masker: Option<Arc<crate::secrets::Masker>>,
}

impl LogSink {
    /// This sink, masking `masker`'s secrets in every line.
    pub fn masked(mut self, masker: Arc<crate::secrets::Masker>) -> LogSink {
        if !masker.is_empty() {
            self.masker = Some(masker);
        }
        self
    }

    pub fn line(&self, stream: &'static str, line: impl Into<String>) {
        let mut line: String = line.into();
        if let Some(masker) = &self.masker
            && let std::borrow::Cow::Owned(masked) = masker.mask(&line)
        {
            line = masked;
        }
        let line = LogLine {
            run_id: self.run_id,
            step_id: self.step_id.clone(),
            attempt: self.attempt,
            stream,
            line,
            at: now_ms(),
        };
        let cost = line.line.len() + LINE_OVERHEAD;
        let mut budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        if budget.head_used + cost <= HEAD_LIMIT {
            budget.head_used += cost;
            drop(budget);
            self.send(line);
            return;
        }
        // Past the head: keep a rolling tail, sent when the attempt ends.
        budget.tail_used += cost;
        budget.tail.push_back(line);
        while budget.tail_used > TAIL_LIMIT {
            let Some(old) = budget.tail.pop_front() else {
                break;
            };
            budget.tail_used -= old.line.len() + LINE_OVERHEAD;
            budget.skipped_lines += 1;
            budget.skipped_bytes += old.line.len() as u64 + 1;
        }
    }

    fn send(&self, line: LogLine) {
        // Watchers see the line at once; the store gets it with the next batch.
        if let Some(echo) = &self.echo {
            let _ = echo.send(line.clone());
        }
        // The writer only goes away when the engine is shutting down; lines after that are
        // lost with it, which is fine for logs.
        let _ = self.sender.send(Message::Line(line));
    }

    /// Ends the attempt's log: sends the kept tail (after a marker saying what was left out),
    /// waits until everything is stored, and turns a success into a failure when lines could
    /// not be stored, naming how many and why.
    pub async fn settle(&self, outcome: Outcome) -> Outcome {
        let (tail, skipped_lines, skipped_bytes) = {
            let mut budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            let tail = std::mem::take(&mut budget.tail);
            budget.tail_used = 0;
            (tail, budget.skipped_lines, budget.skipped_bytes)
        };
        if skipped_lines > 0 {
            self.send(LogLine {
                run_id: self.run_id,
                step_id: self.step_id.clone(),
                attempt: self.attempt,
                stream: "engine",
                line: format!(
                    "[cairn] {skipped_lines} lines ({}) of output were not stored: a step keeps its \
                     first {} and its last {}",
                    human_bytes(skipped_bytes),
                    human_bytes(HEAD_LIMIT as u64),
                    human_bytes(TAIL_LIMIT as u64)
                ),
                at: now_ms(),
            });
        }
        for line in tail {
            self.send(line);
        }
        let (reply, answer) = oneshot::channel();
        let key = (self.run_id, self.step_id.clone(), self.attempt);
        if self.sender.send(Message::Settle { key, reply }).is_err() {
            return outcome;
        }
        let Ok(Some(loss)) = answer.await else {
            return outcome;
        };
        let lost = format!(
            "{} log lines could not be stored ({})",
            loss.lines, loss.cause
        );
        match outcome {
            Outcome::Succeeded { .. } => Outcome::Failed {
                class: FailureClass::ExitCode,
                exit_code: None,
                message: format!("the step succeeded, but {lost}"),
            },
            Outcome::Failed {
                class,
                exit_code,
                message,
            } => Outcome::Failed {
                class,
                exit_code,
                message: format!("{message}; also, {lost}"),
            },
            Outcome::Cancelled => Outcome::Cancelled,
        }
    }
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{} KiB", bytes / 1024),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// Owns the writer task; dropping every sink and calling [`LogWriter::finish`] flushes it.
pub struct LogWriter {
    sender: mpsc::UnboundedSender<Message>,
    echo: Option<mpsc::UnboundedSender<LogLine>>,
    task: tokio::task::JoinHandle<()>,
}

impl LogWriter {
    /// `echo` receives every stored line as it arrives (the terminal view). With a `fence`,
    /// lines are stored only while no other engine has claimed the run since.
    pub fn start(
        store: Store,
        echo: Option<mpsc::UnboundedSender<LogLine>>,
        fence: Option<LogFence>,
    ) -> LogWriter {
        let (sender, receiver) = mpsc::unbounded_channel::<Message>();
        let task = tokio::spawn(write_batches(store, fence, receiver));
        LogWriter { sender, echo, task }
    }

    pub fn sink(&self, run_id: i64, step_id: &str, attempt: u32) -> LogSink {
        LogSink {
            run_id,
            step_id: step_id.to_string(),
            attempt,
            sender: self.sender.clone(),
            echo: self.echo.clone(),
            budget: Arc::new(Mutex::new(Budget::default())),
            masker: None,
        }
    }

    pub async fn finish(self) {
        drop(self.sender);
        let _ = self.task.await;
    }
}

/// The writer task: collects lines for up to [`FLUSH_INTERVAL`] (or [`MAX_BATCH_LINES`]) and
/// stores them in one transaction; a settle request flushes at once.
async fn write_batches(
    store: Store,
    fence: Option<LogFence>,
    mut receiver: mpsc::UnboundedReceiver<Message>,
) {
    let mut losses: HashMap<AttemptKey, Loss> = HashMap::new();
    let mut batch: Vec<LogLine> = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut settles = Vec::new();
        let mut next = Some(first);
        let deadline = tokio::time::Instant::now() + FLUSH_INTERVAL;
        loop {
            match next.take() {
                Some(Message::Line(line)) => batch.push(line),
                Some(Message::Settle { key, reply }) => settles.push((key, reply)),
                None => {}
            }
            if !settles.is_empty() || batch.len() >= MAX_BATCH_LINES {
                break;
            }
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(message)) => next = Some(message),
                // Closed or the interval is over: store what there is.
                Ok(None) | Err(_) => break,
            }
        }
        store_batch(
            &store,
            fence.as_ref(),
            std::mem::take(&mut batch),
            &mut losses,
        )
        .await;
        for (key, reply) in settles {
            let _ = reply.send(losses.remove(&key));
        }
    }
}

async fn store_batch(
    store: &Store,
    fence: Option<&LogFence>,
    lines: Vec<LogLine>,
    losses: &mut HashMap<AttemptKey, Loss>,
) {
    if lines.is_empty() {
        return;
    }
    let writer = store.clone();
    let fence = fence.cloned();
    let (lines, result) = match tokio::task::spawn_blocking(move || {
        // A store that cannot be reached (PostgreSQL restarting) is waited for a while; a
        // batch whose commit was cut off may then be stored twice, which beats losing it.
        let mut pause = Duration::from_millis(200);
        let waited = std::time::Instant::now();
        let result = loop {
            match writer.append_logs(&lines, fence.as_ref()) {
                Err(error) if error.is_unavailable() && waited.elapsed() < STORE_PATIENCE => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                result => break result,
            }
        };
        (lines, result.map_err(|error| error_text(&error)))
    })
    .await
    {
        Ok(done) => done,
        Err(error) => {
            tracing::warn!(%error, "the log writer stopped");
            return;
        }
    };
    let Err(cause) = result else {
        return;
    };
    tracing::warn!(%cause, lines = lines.len(), "failed to store step log lines");
    for line in &lines {
        losses
            .entry((line.run_id, line.step_id.clone(), line.attempt))
            .or_insert_with(|| Loss {
                lines: 0,
                cause: cause.clone(),
            })
            .lines += 1;
    }
}

/// An error with its causes: "state database query failed: database or disk is full".
fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;
    use serde_json::json;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cairn.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_flood_keeps_its_head_and_tail_with_a_marker_between() {
        let (_dir, store) = store().await;
        let writer = LogWriter::start(store.clone(), None, None);
        let sink = writer.sink(1, "flood", 1);
        let total = 400_000u64;
        for number in 0..total {
            sink.line("stdout", format!("line {number}"));
        }
        let outcome = sink.settle(Outcome::Succeeded { outputs: json!({}) }).await;
        assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
        drop(sink);
        writer.finish().await;
        let stored = store.logs(1, Some("flood"), 0).unwrap();
        let bytes: usize = stored
            .iter()
            .map(|line| line.line.len() + LINE_OVERHEAD)
            .sum();
        assert!(
            bytes <= HEAD_LIMIT + TAIL_LIMIT + 1024,
            "stored {bytes} bytes, more than the limits"
        );
        assert_eq!(stored[0].line, "line 0");
        assert_eq!(stored.last().unwrap().line, format!("line {}", total - 1));
        let marker = stored
            .iter()
            .find(|line| line.stream == "engine")
            .expect("a marker line");
        assert!(marker.line.contains("were not stored"), "{}", marker.line);
        let kept = stored.len() as u64 - 1;
        let skipped: u64 = marker.line.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(kept + skipped, total, "every line is stored or counted");
    }

    #[tokio::test]
    async fn lines_the_store_refuses_turn_success_into_a_failure_naming_the_loss() {
        let (_dir, store) = store().await;
        // A table the append cannot write into: the same failure path as a full disk.
        store.write(|_| Ok(())).unwrap();
        let path = store.path().to_path_buf();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER refuse_logs BEFORE INSERT ON step_logs
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
        )
        .unwrap();
        let writer = LogWriter::start(store.clone(), None, None);
        let sink = writer.sink(1, "chatty", 1);
        sink.line("stdout", "hello");
        let outcome = sink.settle(Outcome::Succeeded { outputs: json!({}) }).await;
        match outcome {
            Outcome::Failed { message, .. } => {
                assert!(
                    message.contains("1 log lines could not be stored"),
                    "{message}"
                );
                assert!(message.contains("disk is full"), "{message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        drop(sink);
        writer.finish().await;
    }
}
