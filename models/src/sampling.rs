//! Choosing the next token from logits: repetition penalty, an optional mask of allowed
//! tokens (JSON-constrained mode), then greedy argmax or seeded temperature / top-k / top-p
//! sampling.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Error;
use crate::api::GenerateParams;

pub(crate) struct Sampler {
    temperature: f64,
    top_p: f64,
    top_k: usize,
    repetition_penalty: f32,
    repetition_window: usize,
    rng: StdRng,
}

impl Sampler {
    pub(crate) fn new(params: &GenerateParams) -> Result<Self, Error> {
        let invalid = |name, reason: &str| Error::InvalidParams {
            name,
            reason: reason.to_string(),
        };
        if !params.temperature.is_finite() || params.temperature < 0.0 {
            return Err(invalid("temperature", "must be a finite number >= 0"));
        }
        if !(params.top_p > 0.0 && params.top_p <= 1.0) {
            return Err(invalid("top_p", "must be in (0, 1]"));
        }
        if !params.repetition_penalty.is_finite() || params.repetition_penalty <= 0.0 {
            return Err(invalid("repetition_penalty", "must be a finite number > 0"));
        }
        Ok(Self {
            temperature: params.temperature,
            top_p: params.top_p,
            top_k: params.top_k,
            repetition_penalty: params.repetition_penalty,
            repetition_window: params.repetition_window,
            rng: StdRng::seed_from_u64(params.seed),
        })
    }

    /// Picks a token. `allowed`, when given, says which ids may be chosen; `None` is
    /// returned only when no token is allowed.
    pub(crate) fn sample(
        &mut self,
        logits: &mut [f32],
        history: &[u32],
        allowed: Option<&dyn Fn(u32) -> bool>,
    ) -> Option<u32> {
        self.apply_repetition_penalty(logits, history);
        if let Some(allowed) = allowed {
            for (id, logit) in logits.iter_mut().enumerate() {
                if !allowed(id as u32) {
                    *logit = f32::NEG_INFINITY;
                }
            }
        }
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        self.sample_distribution(logits)
    }

    fn apply_repetition_penalty(&self, logits: &mut [f32], history: &[u32]) {
        if self.repetition_penalty == 1.0 || self.repetition_window == 0 {
            return;
        }
        let start = history.len().saturating_sub(self.repetition_window);
        let mut seen = history[start..].to_vec();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if let Some(logit) = logits.get_mut(id as usize) {
                if *logit >= 0.0 {
                    *logit /= self.repetition_penalty;
                } else {
                    *logit *= self.repetition_penalty;
                }
            }
        }
    }

    fn sample_distribution(&mut self, logits: &[f32]) -> Option<u32> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return None;
        }
        // Candidates sorted by probability, highest first.
        let mut candidates: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(id, &l)| (id as u32, (f64::from(l - max) / self.temperature).exp()))
            .collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.top_k > 0 {
            candidates.truncate(self.top_k);
        }
        let total: f64 = candidates.iter().map(|c| c.1).sum();
        if self.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = candidates.len();
            for (index, (_, weight)) in candidates.iter().enumerate() {
                cumulative += weight / total;
                if cumulative >= self.top_p {
                    keep = index + 1;
                    break;
                }
            }
            candidates.truncate(keep);
        }
        let total: f64 = candidates.iter().map(|c| c.1).sum();
        let mut target = self.rng.random::<f64>() * total;
        for (id, weight) in &candidates {
            if target < *weight {
                return Some(*id);
            }
            target -= weight;
        }
        candidates.last().map(|c| c.0)
    }
}

/// Index of the largest finite logit (the first one on ties).
pub(crate) fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (id, &logit) in logits.iter().enumerate() {
        if logit == f32::NEG_INFINITY || logit.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| logit > b) {
            best = Some((id, logit));
        }
    }
    best.map(|(id, _)| id as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, seed: u64) -> GenerateParams {
        GenerateParams {
            temperature,
            seed,
            ..GenerateParams::default()
        }
    }

    #[test]
    fn greedy_takes_the_largest_allowed_logit() {
        let mut sampler = Sampler::new(&params(0.0, 0)).expect("valid params");
        let mut logits = vec![0.1, 3.0, 2.0];
        assert_eq!(sampler.sample(&mut logits.clone(), &[], None), Some(1));
        let only_two = |id: u32| id == 2;
        assert_eq!(sampler.sample(&mut logits, &[], Some(&only_two)), Some(2));
    }

    #[test]
    fn same_seed_same_samples() {
        let logits = vec![1.0, 1.1, 0.9, 1.05];
        let draw = |seed| {
            let mut sampler = Sampler::new(&params(1.0, seed)).expect("valid params");
            (0..20)
                .map(|_| sampler.sample(&mut logits.clone(), &[], None))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut sampler = Sampler::new(&GenerateParams {
            temperature: 5.0,
            top_k: 1,
            ..GenerateParams::default()
        })
        .expect("valid params");
        for _ in 0..10 {
            assert_eq!(sampler.sample(&mut [0.0, 0.5, 0.4], &[], None), Some(1));
        }
    }

    #[test]
    fn repetition_penalty_lowers_seen_tokens() {
        let mut sampler = Sampler::new(&GenerateParams {
            repetition_penalty: 3.0,
            ..GenerateParams::default()
        })
        .expect("valid params");
        assert_eq!(sampler.sample(&mut [2.0, 1.0], &[0], None), Some(1));
    }

    #[test]
    fn invalid_parameters_are_errors() {
        assert!(Sampler::new(&params(-1.0, 0)).is_err());
        assert!(
            Sampler::new(&GenerateParams {
                top_p: 0.0,
                ..GenerateParams::default()
            })
            .is_err()
        );
    }
}
