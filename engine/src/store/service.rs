//! What `cairn serve --listen` reads and keeps: API tokens (only their SHA-256), runs filtered
//! for the API, attempts, every service's deployments, flaky tests, and the counts behind
//! `/metrics`. See `ARCHITECTURE.md`, "Team service".

use serde::Serialize;
use serde_json::Value;

use super::error::{Error, Result};
use super::records::{RunRecord, StoredLogLine};
use super::runs::{RUN_SUMMARY_COLUMNS, WriteTxn, log_from_row, run_from_row};
use super::sql::Conn;
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
        let found: Option<(i64, String, Option<i64>)> = self.read(|conn| {
            conn.query_opt(
                "SELECT id, scope, last_used_at FROM api_tokens
                 WHERE sha256 = ?1 AND revoked_at IS NULL",
                &[&sha256],
            )?
            .map(|row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .transpose()
        })?;
        let now = now_ms();
        if let Some((id, _, last)) = &found
            && last.is_none_or(|last| now - last > TOKEN_USE_RESOLUTION_MS)
        {
            // At most once a minute per token: a durable commit on every request would cost
            // the engine's writes. Best effort: a busy database must not refuse a valid token.
            let _ = self.write(|txn| {
                txn.conn.execute(
                    "UPDATE api_tokens SET last_used_at = ?1 WHERE id = ?2",
                    &[&now, id],
                )
            });
        }
        Ok(found.map(|(_, scope, _)| scope))
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(|conn| {
            conn.query(
                "SELECT id, name, scope, created_at, last_used_at FROM api_tokens
                 WHERE revoked_at IS NULL ORDER BY id",
                &[],
            )?
            .iter()
            .map(|row| {
                Ok(TokenRecord {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    scope: row.get(2)?,
                    created_at: row.get(3)?,
                    last_used_at: row.get(4)?,
                })
            })
            .collect()
        })
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            conn.query(
                "SELECT seq, step_id, attempt, stream, line, at FROM step_logs
                 WHERE run_id = ?1 AND (?2 IS NULL OR step_id = ?2) AND seq > ?3
                 ORDER BY seq LIMIT ?4",
                &[&run_id, &step_id, &after, &limit],
            )?
            .iter()
            .map(log_from_row)
            .collect()
        })
    }

    pub fn attempts(&self, run_id: i64) -> Result<Vec<AttemptRecord>> {
        self.read(|conn| {
            conn.query(
                "SELECT step_id, attempt, owner, state, failure, exit_code, error, started_at,
                        finished_at
                 FROM attempts WHERE run_id = ?1 ORDER BY started_at, step_id, attempt",
                &[&run_id],
            )?
            .iter()
            .map(|row| {
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
            })
            .collect()
        })
    }

    /// Every service's deployment state (as the deploy agent wrote it), by service name.
    pub fn deployments_updated(&self) -> Result<Vec<(String, Value, i64)>> {
        self.read(|conn| {
            conn.query(
                "SELECT service, state, updated_at FROM deployments ORDER BY service",
                &[],
            )?
            .iter()
            .map(|row| Ok((row.get(0)?, parse_json(row.get(1)?), row.get(2)?)))
            .collect()
        })
    }

    /// Tests that ever failed or flaked, with their counts and quarantine.
    pub fn flaky_tests(&self) -> Result<Vec<FlakyTest>> {
        // Outcomes are counted with CASE (PostgreSQL does not sum booleans), and the
        // quarantine's columns are grouped by too (one quarantine row per test at most, so the
        // groups are the same): PostgreSQL groups by every column it is asked for.
        self.read(|conn| {
            conn.query(
                "SELECT r.repo, r.test_id, COUNT(*),
                        CAST(SUM(CASE WHEN r.outcome = 'failed' THEN 1 ELSE 0 END) AS BIGINT),
                        CAST(SUM(CASE WHEN r.outcome = 'flaky' THEN 1 ELSE 0 END) AS BIGINT),
                        q.since, q.reason
                 FROM test_results r
                 LEFT JOIN test_quarantine q ON q.repo = r.repo AND q.test_id = r.test_id
                 WHERE r.outcome != 'ignored'
                 GROUP BY r.repo, r.test_id, q.since, q.reason
                 HAVING SUM(CASE WHEN r.outcome IN ('failed', 'flaky') THEN 1 ELSE 0 END) > 0
                     OR q.since IS NOT NULL
                 ORDER BY r.repo, r.test_id",
                &[],
            )?
            .iter()
            .map(|row| {
                Ok(FlakyTest {
                    repo: row.get(0)?,
                    test_id: row.get(1)?,
                    runs: row.get(2)?,
                    failed: row.get(3)?,
                    flaky: row.get(4)?,
                    quarantined_since: row.get(5)?,
                    quarantine_reason: row.get(6)?,
                })
            })
            .collect()
        })
    }

    /// The counts behind `/metrics`, read in one transaction so they agree with each other.
    pub fn metric_counts(&self) -> Result<MetricCounts> {
        self.read(|conn| {
            let grouped = |sql: &str| -> Result<Vec<(String, u64)>> {
                conn.query(sql, &[])?
                    .iter()
                    .map(|row| Ok((row.get(0)?, row.get(1)?)))
                    .collect()
            };
            let count = |sql: &str| -> Result<u64> { single(conn, sql) };
            Ok(MetricCounts {
                runs_by_state: grouped("SELECT state, COUNT(*) FROM runs GROUP BY state")?,
                steps_by_state: grouped("SELECT state, COUNT(*) FROM steps GROUP BY state")?,
                attempt_durations_ms: conn
                    .query(
                        "SELECT finished_at - started_at FROM attempts
                         WHERE finished_at IS NOT NULL",
                        &[],
                    )?
                    .iter()
                    .map(|row| row.get(0))
                    .collect::<Result<_>>()?,
                queue_depth: count(
                    "SELECT COUNT(*) FROM steps s JOIN runs r ON r.id = s.run_id
                     WHERE r.state = 'running' AND s.state IN ('pending', 'waiting_retry')",
                )?,
                lease_reclaims: count("SELECT COUNT(*) FROM events WHERE kind = 'run_reclaimed'")?,
                model_calls: conn
                    .query(
                        "SELECT tier, COUNT(*), CAST(SUM(prompt_tokens) AS BIGINT),
                                CAST(SUM(completion_tokens) AS BIGINT),
                                CAST(SUM(cache_hit) AS BIGINT)
                         FROM llm_calls GROUP BY tier ORDER BY tier",
                        &[],
                    )?
                    .iter()
                    .map(|row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                        ))
                    })
                    .collect::<Result<_>>()?,
                // LOWER: SQLite's LIKE ignores ASCII case, PostgreSQL's does not.
                budget_refusals: count(
                    "SELECT COUNT(*) FROM llm_calls WHERE LOWER(fallbacks) LIKE '%budget%'",
                )?,
            })
        })
    }
}

/// The one value of a query that always returns one row (a `COUNT(*)`).
fn single(conn: &dyn Conn, sql: &str) -> Result<u64> {
    conn.query_opt(sql, &[])?
        .ok_or_else(|| Error::BadValue {
            what: "a count",
            detail: format!("no row from `{sql}`"),
        })?
        .get(0)
}

impl WriteTxn<'_> {
    /// Stores a new token's SHA-256 and returns its id.
    pub fn create_token(&self, name: &str, scope: &str, sha256: &str) -> Result<i64> {
        self.conn
            .query_opt(
                "INSERT INTO api_tokens (name, scope, sha256, created_at) VALUES (?1, ?2, ?3, ?4)
                 RETURNING id",
                &[&name, &scope, &sha256, &now_ms()],
            )?
            .ok_or_else(|| Error::BadValue {
                what: "api_tokens",
                detail: "an insert returned no id".into(),
            })?
            .get(0)
    }

    /// Revokes a token; false when there was no such live token.
    pub fn revoke_token(&self, id: i64) -> Result<bool> {
        let changed = self.conn.execute(
            "UPDATE api_tokens SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
            &[&now_ms(), &id],
        )?;
        Ok(changed > 0)
    }
}
