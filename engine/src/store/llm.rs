//! Language-model bookkeeping in the store: the response cache, the durable history of calls
//! (replayed on a re-run attempt), and the budget ledger whose reservations are atomic because
//! the store serializes writers (SQLite's `BEGIN IMMEDIATE`, PostgreSQL's write lock).
//!
//! A ledger row is `reserved` (an upper bound, while the call runs), then `settled` (what the
//! provider reported, even above the reservation: the ledger records the truth and the next
//! reservation is refused until the window has room), `released` (the call never reached the
//! provider) or `expired` (its process died mid-call; see [`WriteTxn::reserve`]).
//!
//! Sums are cast to `BIGINT`: PostgreSQL sums a `BIGINT` column as `NUMERIC`.

use serde::Serialize;

use super::error::Result;
use super::runs::WriteTxn;
use super::sql::{Row, ToValue};
use super::sqlite::{Store, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct CachedResponse {
    pub response: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_micros: i64,
}

/// One language-model call of a step attempt, as recorded (and replayed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub run_id: i64,
    pub step_id: String,
    pub call_index: u32,
    pub task: String,
    pub tier: String,
    pub cache_hit: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_micros: i64,
    pub saved_micros: i64,
    pub latency_ms: i64,
    pub result: String,
    pub fallbacks: Vec<String>,
    /// SHA-256 of the task and the request's text: a replay answers only the same question.
    /// `None` for calls recorded before it was kept.
    pub request_sha256: Option<String>,
}

/// Hard limits for one tier; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetLimits {
    pub run_tokens: Option<u64>,
    pub day_tokens: Option<u64>,
    pub month_tokens: Option<u64>,
    pub day_cost_micros: Option<i64>,
    pub month_cost_micros: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CostRow {
    pub day: String,
    pub task: String,
    pub tier: String,
    pub calls: u64,
    pub cache_hits: u64,
    pub tokens: u64,
    pub cost_micros: i64,
    pub saved_micros: i64,
}

/// `YYYY-MM-DD` and `YYYY-MM` of a UTC millisecond timestamp.
pub fn day_and_month(at_ms: i64) -> (String, String) {
    let date = chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .date_naive();
    (
        date.format("%Y-%m-%d").to_string(),
        date.format("%Y-%m").to_string(),
    )
}

impl Store {
    pub fn cache_get(&self, key: &str) -> Result<Option<CachedResponse>> {
        let now = now_ms();
        self.read(|conn| {
            conn.query_opt(
                "SELECT response, prompt_tokens, completion_tokens, cost_micros FROM llm_cache
                 WHERE key = ?1 AND expires_at > ?2",
                &[&key, &now],
            )?
            .map(|row| {
                Ok(CachedResponse {
                    response: row.get(0)?,
                    prompt_tokens: row.get(1)?,
                    completion_tokens: row.get(2)?,
                    cost_micros: row.get(3)?,
                })
            })
            .transpose()
        })
    }

    /// The recorded answer to this question in this step of this run, for a replay: the call
    /// at `call_index` if it asked exactly this (`task`, `request_sha256`), else the earliest
    /// call of the step that did. A different question is never answered from the record.
    pub fn recorded_call(
        &self,
        run_id: i64,
        step_id: &str,
        call_index: u32,
        task: &str,
        request_sha256: &str,
    ) -> Result<Option<CallRecord>> {
        self.read(|conn| {
            conn.query_opt(
                &format!(
                    "SELECT {CALL_COLUMNS} FROM llm_calls
                     WHERE run_id = ?1 AND step_id = ?2 AND task = ?4
                       AND (request_sha256 = ?5 OR (request_sha256 IS NULL AND call_index = ?3))
                     ORDER BY call_index = ?3 DESC, call_index
                     LIMIT 1"
                ),
                &[&run_id, &step_id, &call_index, &task, &request_sha256],
            )?
            .map(|row| call_from_row(&row))
            .transpose()
        })
    }

    pub fn calls(&self, run_id: i64) -> Result<Vec<CallRecord>> {
        self.read(|conn| {
            conn.query(
                &format!(
                    "SELECT {CALL_COLUMNS} FROM llm_calls WHERE run_id = ?1
                     ORDER BY at, step_id, call_index"
                ),
                &[&run_id],
            )?
            .iter()
            .map(call_from_row)
            .collect()
        })
    }

    /// Spending grouped by day, task and tier, newest day first.
    pub fn costs(&self) -> Result<Vec<CostRow>> {
        // Grouped by the UTC day's number (integer division, the same on both backends) and
        // named here, rather than by a date function, which each database spells its own way.
        self.read(|conn| {
            conn.query(
                "SELECT at / 86400000 AS day, task, tier, COUNT(*),
                        CAST(SUM(cache_hit) AS BIGINT),
                        CAST(SUM(CASE WHEN cache_hit <> 0 THEN 0
                                      ELSE prompt_tokens + completion_tokens END) AS BIGINT),
                        CAST(SUM(cost_micros) AS BIGINT), CAST(SUM(saved_micros) AS BIGINT)
                 FROM llm_calls GROUP BY at / 86400000, task, tier
                 ORDER BY day DESC, task, tier",
                &[],
            )?
            .iter()
            .map(|row| {
                let day: i64 = row.get(0)?;
                Ok(CostRow {
                    day: day_and_month(day.saturating_mul(86_400_000)).0,
                    task: row.get(1)?,
                    tier: row.get(2)?,
                    calls: row.get(3)?,
                    cache_hits: row.get(4)?,
                    tokens: row.get(5)?,
                    cost_micros: row.get(6)?,
                    saved_micros: row.get(7)?,
                })
            })
            .collect()
        })
    }

    /// Tokens reserved or spent by a tier today (UTC), for reports and tests.
    pub fn spent_today(&self, tier: &str) -> Result<(u64, i64)> {
        let (day, _) = day_and_month(now_ms());
        self.read(|conn| {
            let row = conn.query_opt(
                "SELECT CAST(COALESCE(SUM(tokens), 0) AS BIGINT),
                        CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT)
                 FROM llm_budget
                 WHERE tier = ?1 AND day = ?2 AND state IN ('reserved', 'settled')",
                &[&tier, &day],
            )?;
            match row {
                Some(row) => Ok((row.get(0)?, row.get(1)?)),
                None => Ok((0, 0)),
            }
        })
    }
}

impl WriteTxn<'_> {
    #[allow(clippy::too_many_arguments)]
    pub fn cache_put(
        &self,
        key: &str,
        task: &str,
        tier: &str,
        model: &str,
        response: &CachedResponse,
        ttl_ms: i64,
    ) -> Result<()> {
        let now = now_ms();
        self.conn.execute(
            "INSERT INTO llm_cache (key, task, tier, model, response, prompt_tokens,
                                    completion_tokens, cost_micros, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (key) DO UPDATE SET response = excluded.response,
                 prompt_tokens = excluded.prompt_tokens,
                 completion_tokens = excluded.completion_tokens,
                 cost_micros = excluded.cost_micros, created_at = excluded.created_at,
                 expires_at = excluded.expires_at",
            &[
                &key,
                &task,
                &tier,
                &model,
                &response.response,
                &response.prompt_tokens,
                &response.completion_tokens,
                &response.cost_micros,
                &now,
                &now.saturating_add(ttl_ms),
            ],
        )?;
        Ok(())
    }

    pub fn cache_hit(&self, key: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE llm_cache SET hits = hits + 1 WHERE key = ?1",
            &[&key],
        )?;
        Ok(())
    }

    /// Records a call. Its index is the call's position in the attempt; when an earlier attempt
    /// recorded a different question there, the new call goes after the step's last one, so
    /// both are kept and neither answers the other.
    pub fn record_call(&self, call: &CallRecord) -> Result<()> {
        let taken: Option<Option<String>> = self
            .conn
            .query_opt(
                "SELECT request_sha256 FROM llm_calls
                 WHERE run_id = ?1 AND step_id = ?2 AND call_index = ?3",
                &[&call.run_id, &call.step_id, &call.call_index],
            )?
            .map(|row| row.get(0))
            .transpose()?;
        let index: i64 = match taken {
            None => i64::from(call.call_index),
            // The same question at the same place: a replay, already recorded.
            Some(hash) if hash == call.request_sha256 => return Ok(()),
            Some(_) => self
                .conn
                .query_opt(
                    "SELECT MAX(call_index) + 1 FROM llm_calls WHERE run_id = ?1 AND step_id = ?2",
                    &[&call.run_id, &call.step_id],
                )?
                .map(|row| row.get::<Option<i64>>(0))
                .transpose()?
                .flatten()
                .unwrap_or(i64::from(call.call_index)),
        };
        let fallbacks = serde_json::to_string(&call.fallbacks).unwrap_or_else(|_| "[]".into());
        self.conn.execute(
            "INSERT INTO llm_calls (run_id, step_id, call_index, task, tier, cache_hit,
                 prompt_tokens, completion_tokens, cost_micros, saved_micros, latency_ms, result,
                 fallbacks, at, request_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            &[
                &call.run_id,
                &call.step_id,
                &index,
                &call.task,
                &call.tier,
                &call.cache_hit,
                &call.prompt_tokens,
                &call.completion_tokens,
                &call.cost_micros,
                &call.saved_micros,
                &call.latency_ms,
                &call.result,
                &fallbacks,
                &now_ms(),
                &call.request_sha256,
            ],
        )?;
        Ok(())
    }

    /// Reserves `tokens`/`cost` against a tier's limits until `expires_at` (ms). `Ok(Err(reason))`
    /// when a limit would be exceeded; the check and the insert happen in this one write
    /// transaction, so concurrent callers (threads or processes) can never overspend together.
    ///
    /// Reservations past their expiry are expired first: the call they covered can no longer be
    /// running (the client enforces its deadline), so its process died mid-call and would
    /// otherwise hold the budget until the window ends.
    pub fn reserve(
        &self,
        tier: &str,
        run_id: Option<i64>,
        tokens: u64,
        cost_micros: i64,
        limits: &BudgetLimits,
        expires_at: i64,
    ) -> Result<std::result::Result<i64, String>> {
        let now = now_ms();
        self.expire_reservations(now)?;
        if let Some(reason) = self.over_limit(tier, run_id, tokens, cost_micros, limits, now)? {
            return Ok(Err(reason));
        }
        let (day, month) = day_and_month(now);
        let row = self.conn.query_opt(
            "INSERT INTO llm_budget (tier, run_id, day, month, tokens, cost_micros, state, at,
                                     expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'reserved', ?7, ?8)
             RETURNING id",
            &[
                &tier,
                &run_id,
                &day,
                &month,
                &tokens,
                &cost_micros,
                &now,
                &expires_at,
            ],
        )?;
        let id = row
            .ok_or_else(|| super::error::Error::BadValue {
                what: "llm_budget",
                detail: "an insert returned no id".into(),
            })?
            .get(0)?;
        Ok(Ok(id))
    }

    /// Adds `tokens`/`cost` to a live reservation (a retry after an attempt the provider may
    /// have billed), under the same limits and in the same atomic way as [`WriteTxn::reserve`].
    pub fn extend(
        &self,
        reservation: i64,
        tier: &str,
        run_id: Option<i64>,
        tokens: u64,
        cost_micros: i64,
        limits: &BudgetLimits,
    ) -> Result<std::result::Result<(), String>> {
        let now = now_ms();
        if let Some(reason) = self.over_limit(tier, run_id, tokens, cost_micros, limits, now)? {
            return Ok(Err(reason));
        }
        self.conn.execute(
            "UPDATE llm_budget SET tokens = tokens + ?2, cost_micros = cost_micros + ?3
             WHERE id = ?1",
            &[&reservation, &tokens, &cost_micros],
        )?;
        Ok(Ok(()))
    }

    fn expire_reservations(&self, now: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE llm_budget SET state = 'expired'
             WHERE state = 'reserved' AND COALESCE(expires_at, at + 3600000) < ?1",
            &[&now],
        )?;
        Ok(())
    }

    /// Why `tokens`/`cost` more would break a limit, if they would.
    fn over_limit(
        &self,
        tier: &str,
        run_id: Option<i64>,
        tokens: u64,
        cost_micros: i64,
        limits: &BudgetLimits,
        now: i64,
    ) -> Result<Option<String>> {
        let (day, month) = day_and_month(now);
        let sum = |column: &str, filter: &str, value: &dyn ToValue| -> Result<i64> {
            self.conn
                .query_opt(
                    &format!(
                        "SELECT CAST(COALESCE(SUM({column}), 0) AS BIGINT) FROM llm_budget
                         WHERE tier = ?1 AND {filter} = ?2 AND state IN ('reserved', 'settled')"
                    ),
                    &[&tier, &value],
                )?
                .map_or(Ok(0), |row| row.get(0))
        };
        // (what, limit, column, filter column, filter value, amount asked)
        type Check<'v> = (
            &'static str,
            Option<i64>,
            &'static str,
            &'static str,
            &'v dyn ToValue,
            i64,
        );
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        let as_limit = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let checks: [Check<'_>; 5] = [
            (
                "run tokens",
                limits.run_tokens.map(as_limit),
                "tokens",
                "run_id",
                &run_id,
                tokens,
            ),
            (
                "daily tokens",
                limits.day_tokens.map(as_limit),
                "tokens",
                "day",
                &day,
                tokens,
            ),
            (
                "monthly tokens",
                limits.month_tokens.map(as_limit),
                "tokens",
                "month",
                &month,
                tokens,
            ),
            (
                "daily cost",
                limits.day_cost_micros,
                "cost_micros",
                "day",
                &day,
                cost_micros,
            ),
            (
                "monthly cost",
                limits.month_cost_micros,
                "cost_micros",
                "month",
                &month,
                cost_micros,
            ),
        ];
        for (what, limit, column, filter, value, asked) in checks {
            let Some(limit) = limit else { continue };
            if filter == "run_id" && run_id.is_none() {
                continue;
            }
            let used = sum(column, filter, value)?;
            if used.saturating_add(asked) > limit {
                return Ok(Some(format!(
                    "{tier} {what} budget exhausted: {used} used + {asked} needed > {limit}"
                )));
            }
        }
        Ok(None)
    }

    /// Replaces a reservation by what the call really used.
    pub fn settle(&self, reservation: i64, tokens: u64, cost_micros: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE llm_budget SET tokens = ?2, cost_micros = ?3, state = 'settled' WHERE id = ?1",
            &[&reservation, &tokens, &cost_micros],
        )?;
        Ok(())
    }

    /// Gives a reservation back (the call never reached the provider).
    pub fn release(&self, reservation: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE llm_budget SET state = 'released' WHERE id = ?1",
            &[&reservation],
        )?;
        Ok(())
    }
}

const CALL_COLUMNS: &str = "run_id, step_id, call_index, task, tier, cache_hit, prompt_tokens, \
     completion_tokens, cost_micros, saved_micros, latency_ms, result, fallbacks, request_sha256";

fn call_from_row(row: &Row) -> Result<CallRecord> {
    Ok(CallRecord {
        run_id: row.get(0)?,
        step_id: row.get(1)?,
        call_index: row.get(2)?,
        task: row.get(3)?,
        tier: row.get(4)?,
        cache_hit: row.get(5)?,
        prompt_tokens: row.get(6)?,
        completion_tokens: row.get(7)?,
        cost_micros: row.get(8)?,
        saved_micros: row.get(9)?,
        latency_ms: row.get(10)?,
        result: row.get(11)?,
        // Written by us as JSON; an unreadable list only loses the explanation.
        fallbacks: serde_json::from_str(&row.get::<String>(12)?).unwrap_or_default(),
        request_sha256: row.get(13)?,
    })
}
