//! How many threads decode a token: one, or the model's whole pool — chosen by measuring.
//!
//! Decoding one token is a chain of small matrix-vector products; splitting each over two
//! threads is faster only while both cores are free. On a busy machine (builds and tests
//! beside the engine) a second thread waits for a core at every product and two-thread
//! decoding falls from ~70 to 3–7 tokens/s, while one thread holds. The machine's load cannot
//! be read reliably enough to predict this (a one-minute average lags; an instantaneous count
//! includes the pool's own threads), so the chooser measures it: it keeps a smoothed time per
//! token for each width, decodes at the faster one, and every [`PROBE_EVERY`] tokens decodes
//! one token at the other width, so a change in the machine's load is noticed within a few
//! dozen tokens. Prefill (many tokens at once) always uses the whole pool: its products are
//! large enough to split well even on a busy machine.
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

/// Tokens decoded at the better width between two probes of the other.
pub(crate) const PROBE_EVERY: u32 = 16;

/// Weight of the newest token's time in the smoothed time per token.
const SMOOTHING: f64 = 0.25;

/// The measurements behind the choice.
#[derive(Debug, Default)]
pub(crate) struct WidthChooser {
    narrow: Option<f64>,
    wide: Option<f64>,
    since_probe: u32,
}

impl WidthChooser {
    /// The width to decode the next token at: each width once at first, then the faster one,
    /// with the other probed every [`PROBE_EVERY`] tokens.
    pub(crate) fn pick(&mut self) -> Width {
        let (narrow, wide) = match (self.narrow, self.wide) {
            (None, _) => return Width::Narrow,
            (_, None) => return Width::Wide,
            (Some(narrow), Some(wide)) => (narrow, wide),
        };
        let best = if wide < narrow {
            Width::Wide
        } else {
            Width::Narrow
        };
        self.since_probe += 1;
        if self.since_probe >= PROBE_EVERY {
            self.since_probe = 0;
            return best.other();
        }
        best
    }

    /// How long a token took at `width`.
    pub(crate) fn record(&mut self, width: Width, took: Duration) {
        let seconds = took.as_secs_f64();
        let slot = match width {
            Width::Narrow => &mut self.narrow,
            Width::Wide => &mut self.wide,
        };
        *slot = Some(match *slot {
            Some(smoothed) => smoothed + SMOOTHING * (seconds - smoothed),
            None => seconds,
        });
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
        let narrow = idle[2..].iter().filter(|w| **w == Width::Narrow).count();
        assert_eq!(
            narrow,
            62 / PROBE_EVERY as usize,
            "only the probes go narrow"
        );
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
    }
}
