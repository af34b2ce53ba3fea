//! How many threads decode a token: one, or the model's whole pool — chosen by measuring.
//!
//! Decoding one token is a chain of small matrix-vector products; splitting each over two
//! threads is faster only while both cores are free. On a busy machine (builds and tests
//! beside the engine) a second thread waits for a core at every product and two-thread
//! decoding falls from ~70 to 3–7 tokens/s, while one thread holds. The machine's load cannot
//! be read reliably enough to predict this (a one-minute average lags; an instantaneous count
//! includes the pool's own threads), so the chooser measures it: it keeps a smoothed time per
//! token for each width, decodes at the faster one, and now and then decodes one token at the
//! other width: [`PROBE_EVERY`] tokens apart, twice as far after each probe that finds it
//! still slower (up to `PROBE_EVERY_MAX`). The width in use getting slower shows in its own
//! times at once; the other getting faster is noticed within that many tokens. Prefill (many
//! tokens at once) always uses the whole pool: its products are large enough to split well
//! even on a busy machine.
//!
//! The idle width's threads sleep: rayon parks a worker soon after it runs out of work.

use std::time::Duration;

/// One of the two widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    /// The calling thread of a one-thread pool.
    Narrow,
    /// The model's whole pool.
    Wide,
}

impl Width {
    fn other(self) -> Width {
        match self {
            Width::Narrow => Width::Wide,
            Width::Wide => Width::Narrow,
        }
    }
}

/// Tokens decoded at the better width between two probes of the other, at first and after
/// the choice changes.
pub(crate) const PROBE_EVERY: u32 = 16;

/// A probe that finds the other width still slower doubles the wait before the next one, up
/// to this many tokens: a probe at the slower width costs most of a token (two threads are
/// ~1.7x one on the 0.5B model), and probing every 16 tokens cost ~5% of a long
/// generation. The better width getting slower needs no probe (its own times show it).
const PROBE_EVERY_MAX: u32 = 128;

/// Weight of the newest token's time in the smoothed time per token.
const SMOOTHING: f64 = 0.25;

/// The measurements behind the choice.
#[derive(Debug)]
pub(crate) struct WidthChooser {
    narrow: Option<f64>,
    wide: Option<f64>,
    since_probe: u32,
    probe_every: u32,
    /// The width being probed, until its time is recorded.
    probing: Option<Width>,
}

impl Default for WidthChooser {
    fn default() -> Self {
        Self {
            narrow: None,
            wide: None,
            since_probe: 0,
            probe_every: PROBE_EVERY,
            probing: None,
        }
    }
}

impl WidthChooser {
    /// The width to decode the next token at: each width once at first, then the faster one,
    /// with the other probed every [`PROBE_EVERY`] tokens (less often while probes keep
    /// finding it slower).
    pub(crate) fn pick(&mut self) -> Width {
        let Some(best) = self.best() else {
            return if self.narrow.is_none() {
                Width::Narrow
            } else {
                Width::Wide
            };
        };
        self.since_probe += 1;
        if self.since_probe >= self.probe_every {
            self.since_probe = 0;
            self.probing = Some(best.other());
            return best.other();
        }
        best
    }

    /// How long a token took at `width`.
    pub(crate) fn record(&mut self, width: Width, took: Duration) {
        let before = self.best();
        let probe = self.probing.take() == Some(width);
        let seconds = took.as_secs_f64();
        let slot = match width {
            Width::Narrow => &mut self.narrow,
            Width::Wide => &mut self.wide,
        };
        // A probe's time replaces the width's old one, measured up to a hundred tokens ago
        // under another load; the width in use is smoothed over its recent tokens.
        *slot = Some(match *slot {
            Some(smoothed) if !probe => smoothed + SMOOTHING * (seconds - smoothed),
            _ => seconds,
        });
        if self.best() != before {
            self.probe_every = PROBE_EVERY;
        } else if probe {
            self.probe_every = (self.probe_every * 2).min(PROBE_EVERY_MAX);
        }
    }

    /// The faster width, once both are measured.
    fn best(&self) -> Option<Width> {
        let (narrow, wide) = (self.narrow?, self.wide?);
        Some(if wide < narrow {
            Width::Wide
        } else {
            Width::Narrow
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chooser: &mut WidthChooser, tokens: usize, cost: impl Fn(Width) -> u64) -> Vec<Width> {
        (0..tokens)
            .map(|_| {
                let width = chooser.pick();
                chooser.record(width, Duration::from_millis(cost(width)));
                width
            })
            .collect()
    }

    #[test]
    fn settles_on_the_faster_width_and_follows_a_change_of_load() {
        let mut chooser = WidthChooser::default();
        // Idle: two threads decode in 8 ms, one in 14 ms.
        let idle = run(&mut chooser, 64, |w| if w == Width::Wide { 8 } else { 14 });
        assert_eq!(
            &idle[..2],
            [Width::Narrow, Width::Wide],
            "each measured first"
        );
        let narrow: Vec<usize> = (2..idle.len())
            .filter(|&i| idle[i] == Width::Narrow)
            .collect();
        assert_eq!(narrow, [17, 49], "probes 16, then 32 tokens apart");
        // Busy: the second thread waits for a core; two threads take 150 ms, one 16 ms.
        let busy = run(
            &mut chooser,
            64,
            |w| if w == Width::Wide { 150 } else { 16 },
        );
        let wide = busy.iter().filter(|w| **w == Width::Wide).count();
        assert!(
            wide <= 6,
            "back to one thread within a probe or two: {busy:?}"
        );
        assert!(busy[40..].iter().filter(|w| **w == Width::Wide).count() <= 2);
        // Idle again, after a long busy spell: one thread is still measured as before, and
        // the wide probe that finds two threads faster comes within the longest wait.
        run(
            &mut chooser,
            512,
            |w| if w == Width::Wide { 150 } else { 16 },
        );
        let idle_again = run(&mut chooser, 200, |w| if w == Width::Wide { 8 } else { 14 });
        let first_wide = idle_again.iter().position(|w| *w == Width::Wide);
        let Some(first_wide) = first_wide.filter(|&i| i < PROBE_EVERY_MAX as usize) else {
            panic!("no wide probe within {PROBE_EVERY_MAX} tokens: {idle_again:?}");
        };
        let narrow_after = idle_again[first_wide..]
            .iter()
            .filter(|w| **w == Width::Narrow)
            .count();
        assert!(
            narrow_after <= 4,
            "wide from the first probe on: {idle_again:?}"
        );
    }
}
