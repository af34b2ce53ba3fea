//! What `cairn serve --listen` reads and keeps: API tokens (only their SHA-256), runs filtered
//! for the API, attempts, every service's deployments, flaky tests, and the counts behind
//! `/metrics`. See `ARCHITECTURE.md`, "Team service".

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::error::Result;
use super::records::{RunRecord, StoredLogLine};
use super::runs::{RUN_SUMMARY_COLUMNS, WriteTxn, run_from_row};
use super::sqlite::{Store, now_ms, parse_json};

/// A stored API token: never the token itself.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// Which runs to list; every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow: Option<String>,
    /// The repository's url as the trigger names it, or the path a manual run used.
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub state: Option<String>,
    /// The risk level the run's orchestrator step published (`low`, `medium`, `high`).
    pub risk: Option<String>,
    pub limit: usize,
    /// Only runs with an id below this one (paging, newest first).
    pub before: Option<i64>,
}

/// A run with the risk and route its orchestrator published, when it has.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    #[serde(flatten)]
    pub run: RunRecord,
    pub risk: Option<String>,
    /// The route as the orchestrator published it (an object: tests, build, deploy, monitor).
    pub route: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub step_id: String,
    pub attempt: u32,
    pub owner: String,
    pub state: String,
    pub failure: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlakyTest {
    pub repo: String,
    pub test_id: String,
    pub runs: u64,
    pub failed: u64,
    pub flaky: u64,
    pub quarantined_since: Option<i64>,
    pub quarantine_reason: Option<String>,
}

/// Counts for `/metrics`, each a list of (labels, value).
#[derive(Debug, Clone, Default)]
pub struct MetricCounts {
    pub runs_by_state: Vec<(String, u64)>,
    pub steps_by_state: Vec<(String, u64)>,
    /// Durations (ms) of finished attempts, for the histogram.
    pub attempt_durations_ms: Vec<i64>,
    /// Steps waiting for their turn: pending or retrying in unfinished runs.
    pub queue_depth: u64,
    pub lease_reclaims: u64,
    /// (tier, calls, prompt tokens, completion tokens, cache hits).
    pub model_calls: Vec<(String, u64, u64, u64, u64)>,
    pub budget_refusals: u64,
}

/// How precisely a token's last use is kept.
const TOKEN_USE_RESOLUTION_MS: i64 = 60_000;

const RISK_OF_RUN: &str = "(SELECT json_extract(s.outputs, '$.risk') FROM steps s
     WHERE s.run_id = runs.id AND json_extract(s.outputs, '$.risk') IS NOT NULL
     ORDER BY s.position LIMIT 1)";
const ROUTE_OF_RUN: &str = "(SELECT json_extract(s.outputs, '$.route') FROM steps s
     WHERE s.run_id = runs.id AND json_extract(s.outputs, '$.route') IS NOT NULL
     ORDER BY s.position LIMIT 1)";

impl Store {
    /// The scope of an unrevoked token with this SHA-256, noting its use.
    pub fn token_scope(&self, sha256: &str) -> Result<Option<String>> {
        let conn = self.lock()?;
        let found: Option<(i64, String, Option<i64>)> = conn
            .query_row(
                "SELECT id, scope, last_used_at FROM api_tokens
                 WHERE sha256 = ?1 AND revoked_at IS NULL",
                [sha256],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let now = now_ms();
        if let Some((id, _, last)) = &found
            && last.is_none_or(|last| now - last > TOKEN_USE_RESOLUTION_MS)
        {
            // At most once a minute per token: a durable commit on every request would cost
            // the engine's writes. Best effort: a busy database must not refuse a valid token.
            let _ = conn.execute(
                "UPDATE api_tokens SET last_used_at = ?1 WHERE id = ?2",
                params![now, id],
            );
        }
        Ok(found.map(|(_, scope, _)| scope))
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT id, name, scope, created_at, last_used_at FROM api_tokens
             WHERE revoked_at IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(TokenRecord {
                id: row.get(0)?,
                name: row.get(1)?,
                scope: row.get(2)?,
                created_at: row.get(3)?,
                last_used_at: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Runs matching `filter`, newest first, with their risk and route.
    pub fn filtered_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        let sql = format!(
            "SELECT {RUN_SUMMARY_COLUMNS}, {RISK_OF_RUN}, {ROUTE_OF_RUN} FROM runs
             WHERE (?1 IS NULL OR workflow = ?1)
               AND (?2 IS NULL OR json_extract(context, '$.repo_url') = ?2
                    OR json_extract(context, '$.repo') = ?2)
               AND (?3 IS NULL OR json_extract(context, '$.branch') = ?3)
               AND (?4 IS NULL OR state = ?4)
               AND (?5 IS NULL OR {RISK_OF_RUN} = ?5)
               AND (?6 IS NULL OR id < ?6)
             ORDER BY id DESC LIMIT ?7"
        );
        let limit = filter.limit as i64;
        self.read(|conn| {
            conn.query(
                &sql,
                &[
                    &filter.workflow,
                    &filter.repository,
                    &filter.branch,
                    &filter.state,
                    &filter.risk,
                    &filter.before,
                    &limit,
                ],
            )?
            .iter()
            .map(|row| {
                let run = run_from_row(row)?;
                let risk: Option<String> = row.get(13)?;
                // `json_extract` of an object is its JSON text.
                let route: Option<String> = row.get(14)?;
                let route =
                    route.map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text)));
                Ok(RunSummary { run, risk, route })
            })
            .collect()
        })
    }

    /// At most `limit` log lines of a run (optionally one step) with `seq > after`, in order.
    pub fn logs_page(
        &self,
        run_id: i64,
        step_id: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredLogLine>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, step_id, attempt, stream, line, at FROM step_logs
             WHERE run_id = ?1 AND (?2 IS NULL OR step_id = ?2) AND seq > ?3
             ORDER BY seq LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![run_id, step_id, after, limit as i64], |row| {
            Ok(StoredLogLine {
                seq: row.get(0)?,
                step_id: row.get(1)?,
                attempt: row.get(2)?,
                stream: row.get(3)?,
                line: row.get(4)?,
                at: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn attempts(&self, run_id: i64) -> Result<Vec<AttemptRecord>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT step_id, attempt, owner, state, failure, exit_code, error, started_at,
                    finished_at
             FROM attempts WHERE run_id = ?1 ORDER BY started_at, step_id, attempt",
        )?;
        let rows = stmt.query_map([run_id], |row| {
            Ok(AttemptRecord {
                step_id: row.get(0)?,
                attempt: row.get(1)?,
                owner: row.get(2)?,
                state: row.get(3)?,
                failure: row.get(4)?,
                exit_code: row.get(5)?,
                error: row.get(6)?,
                started_at: row.get(7)?,
                finished_at: row.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every service's deployment state (as the deploy agent wrote it), by service name.
    pub fn deployments_updated(&self) -> Result<Vec<(String, Value, i64)>> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare("SELECT service, state, updated_at FROM deployments ORDER BY service")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                parse_json(row.get::<_, String>(1)?),
                row.get::<_, i64>(2)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Tests that ever failed or flaked, with their counts and quarantine.
    pub fn flaky_tests(&self) -> Result<Vec<FlakyTest>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT r.repo, r.test_id, COUNT(*),
                    SUM(r.outcome = 'failed'), SUM(r.outcome = 'flaky'), q.since, q.reason
             FROM test_results r
             LEFT JOIN test_quarantine q ON q.repo = r.repo AND q.test_id = r.test_id
             WHERE r.outcome != 'ignored'
             GROUP BY r.repo, r.test_id
             HAVING SUM(r.outcome IN ('failed', 'flaky')) > 0 OR q.since IS NOT NULL
             ORDER BY r.repo, r.test_id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(FlakyTest {
                repo: row.get(0)?,
                test_id: row.get(1)?,
                runs: row.get(2)?,
                failed: row.get(3)?,
                flaky: row.get(4)?,
                quarantined_since: row.get(5)?,
                quarantine_reason: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The counts behind `/metrics`, read in one transaction so they agree with each other.
    pub fn metric_counts(&self) -> Result<MetricCounts> {
        let mut conn = self.lock()?;
        let txn = conn.transaction()?;
        let mut counts = MetricCounts::default();
        let grouped = |sql: &str| -> rusqlite::Result<Vec<(String, u64)>> {
            let mut stmt = txn.prepare(sql)?;
            let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        };
        counts.runs_by_state = grouped("SELECT state, COUNT(*) FROM runs GROUP BY state")?;
        counts.steps_by_state = grouped("SELECT state, COUNT(*) FROM steps GROUP BY state")?;
        {
            let mut stmt = txn.prepare(
                "SELECT finished_at - started_at FROM attempts WHERE finished_at IS NOT NULL",
            )?;
            let rows = stmt.query_map([], |row| row.get(0))?;
            counts.attempt_durations_ms = rows.collect::<rusqlite::Result<_>>()?;
        }
        counts.queue_depth = txn.query_row(
            "SELECT COUNT(*) FROM steps s JOIN runs r ON r.id = s.run_id
             WHERE r.state = 'running' AND s.state IN ('pending', 'waiting_retry')",
            [],
            |row| row.get(0),
        )?;
        counts.lease_reclaims = txn.query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'run_reclaimed'",
            [],
            |row| row.get(0),
        )?;
        {
            let mut stmt = txn.prepare(
                "SELECT tier, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cache_hit)
                 FROM llm_calls GROUP BY tier ORDER BY tier",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })?;
            counts.model_calls = rows.collect::<rusqlite::Result<_>>()?;
        }
        counts.budget_refusals = txn.query_row(
            "SELECT COUNT(*) FROM llm_calls WHERE fallbacks LIKE '%budget%'",
            [],
            |row| row.get(0),
        )?;
        Ok(counts)
    }
}

impl WriteTxn<'_> {
    /// Stores a new token's SHA-256 and returns its id.
    pub fn create_token(&self, name: &str, scope: &str, sha256: &str) -> Result<i64> {
        self.sqlite()?.execute(
            "INSERT INTO api_tokens (name, scope, sha256, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, scope, sha256, now_ms()],
        )?;
        Ok(self.sqlite()?.last_insert_rowid())
    }

    /// Revokes a token; false when there was no such live token.
    pub fn revoke_token(&self, id: i64) -> Result<bool> {
        let changed = self.sqlite()?.execute(
            "UPDATE api_tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            params![now_ms(), id],
        )?;
        Ok(changed > 0)
    }
}
