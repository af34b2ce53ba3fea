//! A remote call's budget reservation: an upper bound taken before the call, extended for each
//! retry after an attempt the provider may have billed, and settled with what the provider
//! reported (even when that is more: the ledger records it, and later reservations are refused
//! until the window has room again).
//!
//! The bound holds whatever the provider's tokenizer: a byte-level BPE token covers at least
//! one byte, so a prompt is at most its bytes plus framing, and an answer at most `max_tokens`.

use serde_json::Value;

use super::config::Price;
use super::remote::Message;
use crate::store::{BudgetLimits, Store};

/// Tokens of framing per message (role, separators) — generous next to any chat template.
const PER_MESSAGE: u64 = 8;
/// Tokens of framing per request (the reply priming, the response-format instructions).
const PER_REQUEST: u64 = 16;

/// The most prompt tokens `messages` (and the response schema, which providers put in the
/// prompt) can cost.
pub fn prompt_upper_bound(messages: &[Message], schema: Option<&Value>) -> u64 {
    let messages: u64 = messages
        .iter()
        .map(|m| (m.content.len() + m.role.len()) as u64 + PER_MESSAGE)
        .sum();
    messages + schema.map_or(0, |s| s.to_string().len() as u64) + PER_REQUEST
}

pub struct Reservation<'a> {
    store: &'a Store,
    id: i64,
    run_id: Option<i64>,
    limits: BudgetLimits,
    /// What one try may cost: the upper bound.
    tokens: u64,
    cost_micros: i64,
    /// Earlier tries the provider may have billed, each held at the bound.
    billed_tries: u64,
}

const TIER: &str = "remote";

impl<'a> Reservation<'a> {
    /// Reserves one try's upper bound until `expires_at` (ms since the epoch).
    pub fn open(
        store: &'a Store,
        run_id: Option<i64>,
        limits: BudgetLimits,
        prompt_bound: u64,
        max_tokens: u64,
        price: Price,
        expires_at: i64,
    ) -> Result<Reservation<'a>, String> {
        let tokens = prompt_bound + max_tokens;
        let cost_micros = price.cost_micros(prompt_bound, max_tokens);
        let id = store
            .write(|txn| txn.reserve(TIER, run_id, tokens, cost_micros, &limits, expires_at))
            .map_err(|e| format!("budget ledger unavailable: {e}"))??;
        Ok(Reservation {
            store,
            id,
            run_id,
            limits,
            tokens,
            cost_micros,
            billed_tries: 0,
        })
    }

    /// Covers one more try after an attempt the provider may have billed.
    pub fn extend(&mut self) -> Result<(), String> {
        let (id, run_id, tokens, cost) = (self.id, self.run_id, self.tokens, self.cost_micros);
        let limits = self.limits;
        self.store
            .write(|txn| txn.extend(id, TIER, run_id, tokens, cost, &limits))
            .map_err(|e| format!("budget ledger unavailable: {e}"))??;
        self.billed_tries += 1;
        Ok(())
    }

    /// The call answered: what the provider reported, plus earlier tries at their bound.
    /// Returns the tokens and cost charged for the answer itself.
    pub fn settle(self, reported_tokens: u64, reported_cost: i64) {
        let tokens = reported_tokens + self.billed_tries * self.tokens;
        let cost = reported_cost + self.billed_tries as i64 * self.cost_micros;
        let reserved = (self.billed_tries + 1) * self.tokens;
        if tokens > reserved {
            tracing::warn!(
                reported = tokens,
                reserved,
                "the provider reported more tokens than the upper bound reserved; recorded as reported"
            );
        }
        self.write_settlement(tokens, cost);
    }

    /// The call failed; `billed` when its last try may have been billed.
    pub fn fail(self, billed: bool) {
        let tries = self.billed_tries + u64::from(billed);
        if tries == 0 {
            let id = self.id;
            if let Err(error) = self.store.write(|txn| txn.release(id)) {
                tracing::warn!(%error, "failed to release a budget reservation");
            }
            return;
        }
        self.write_settlement(tries * self.tokens, tries as i64 * self.cost_micros);
    }

    fn write_settlement(&self, tokens: u64, cost: i64) {
        let id = self.id;
        if let Err(error) = self.store.write(|txn| txn.settle(id, tokens, cost)) {
            // The reservation stays `reserved` at its bound and expires later: never an
            // under-count while it matters.
            tracing::warn!(%error, "failed to settle a budget reservation");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_covers_a_one_byte_per_token_tokenizer() {
        let messages = [
            Message {
                role: "system",
                content: "x".repeat(300),
            },
            Message {
                role: "user",
                content: "é".repeat(100),
            },
        ];
        let bound = prompt_upper_bound(&messages, None);
        // 300 + 200 bytes of content; a tokenizer of one token per byte plus 4 per message.
        assert!(bound >= 500 + 2 * 4, "{bound}");
    }
}
