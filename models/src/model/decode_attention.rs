//! Attention of one decoded token over the cached keys and values, read in place from the
//! cache's buffers ([`super::kv_cache::KvCache`]). candle's general path (`q.matmul(k.t())`,
//! softmax, `probs.matmul(v)`) works on a view of the first `len` positions of the
//! preallocated cache, which is not contiguous, so every layer copied its whole key and value
//! cache at every token: decoding slowed with the context far more than the arithmetic does
//! (at 512 tokens of context to about half its empty-context speed).
//!
//! Here each query head takes the dot products with its key/value head's keys, a softmax, and
//! the weighted sum of the values, with AVX2/FMA where the CPU has them (checked at run time)
//! and plain loops elsewhere. Grouped-query attention: query head `h` reads key/value head
//! `h / (n_head / n_kv_head)`. Heads are split over the current rayon pool when the context
//! is long enough to pay for it.

use rayon::prelude::*;

/// Where the heads and positions are: query `(n_head, head_dim)`, keys and values
/// `(n_kv_head, capacity, head_dim)` of which the first `len` positions are filled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub capacity: usize,
    pub len: usize,
}

/// Below this many cached positions the heads run on the calling thread: handing a head to
/// another thread costs more than its few thousand multiply-adds.
const PARALLEL_MIN_LEN: usize = 128;

/// `out` (`n_head * head_dim`): softmax(q·kᵀ · scale) · v for every query head.
pub(crate) fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    geometry: Geometry,
    scale: f32,
    out: &mut [f32],
) {
    let Geometry {
        n_head,
        n_kv_head,
        head_dim,
        capacity,
        len,
    } = geometry;
    let group = (n_head / n_kv_head.max(1)).max(1);
    let vector = Vector::detect();
    let head = |(h, out): (usize, &mut [f32])| {
        let kv = h / group;
        let q = &q[h * head_dim..(h + 1) * head_dim];
        let base = kv * capacity * head_dim;
        let keys = &keys[base..base + len * head_dim];
        let values = &values[base..base + len * head_dim];
        let mut scores: Vec<f32> = keys
            .chunks_exact(head_dim)
            .map(|k| vector.dot(q, k) * scale)
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for s in &mut scores {
            *s = (*s - max).exp();
            sum += *s;
        }
        out.fill(0.0);
        for (p, v) in scores.iter().zip(values.chunks_exact(head_dim)) {
            vector.axpy(out, p / sum, v);
        }
    };
    if len >= PARALLEL_MIN_LEN && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(head_dim).enumerate().for_each(head);
    } else {
        out.chunks_mut(head_dim).enumerate().for_each(head);
    }
}

/// Which loops this CPU runs.
#[derive(Debug, Clone, Copy)]
enum Vector {
    #[cfg(target_arch = "x86_64")]
    Avx2(avx2::Avx2),
    Portable,
}

impl Vector {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = avx2::Avx2::detect() {
            return Self::Avx2(avx2);
        }
        Self::Portable
    }

    /// Σ a·b over the shorter of the two.
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(avx2) => avx2.dot(a, b),
            Self::Portable => a.iter().zip(b).map(|(x, y)| x * y).sum(),
        }
    }

    /// `y += a·x` over the shorter of the two.
    fn axpy(self, y: &mut [f32], a: f32, x: &[f32]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(avx2) => avx2.axpy(y, a, x),
            Self::Portable => y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use std::arch::x86_64::{
        _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehdup_ps, _mm_movehl_ps, _mm256_add_ps,
        _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };

    /// Proof that this CPU has AVX2 and FMA: only [`Avx2::detect`] makes one.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Avx2(());

    impl Avx2 {
        pub(super) fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
                .then_some(Self(()))
        }

        pub(super) fn dot(self, a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: `self` exists only when the CPU has the features.
            unsafe { dot(a, b) }
        }

        pub(super) fn axpy(self, y: &mut [f32], a: f32, x: &[f32]) {
            // SAFETY: as in `dot`.
            unsafe { axpy(y, a, x) }
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY (all loads): `i + 8 <= n` (or `i + 16 <= n`) keeps them inside both slices.
        while i + 16 <= n {
            unsafe {
                even = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    even,
                );
                odd = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                    odd,
                );
            }
            i += 16;
        }
        while i + 8 <= n {
            unsafe {
                even = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    even,
                );
            }
            i += 8;
        }
        let acc = _mm256_add_ps(even, odd);
        let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
        let mut sum = _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)));
        for j in i..n {
            sum += a[j] * b[j];
        }
        sum
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len().min(x.len());
        let scale = _mm256_set1_ps(a);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n` keeps the loads and the store inside both slices.
            unsafe {
                let sum = _mm256_fmadd_ps(
                    scale,
                    _mm256_loadu_ps(x.as_ptr().add(i)),
                    _mm256_loadu_ps(y.as_ptr().add(i)),
                );
                _mm256_storeu_ps(y.as_mut_ptr().add(i), sum);
            }
            i += 8;
        }
        for j in i..n {
            y[j] += a * x[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same attention, written out plainly in f64.
    fn reference(q: &[f32], keys: &[f32], values: &[f32], g: Geometry, scale: f32) -> Vec<f32> {
        let group = g.n_head / g.n_kv_head;
        let mut out = vec![0.0; g.n_head * g.head_dim];
        for h in 0..g.n_head {
            let kv = h / group;
            let row = |buffer: &[f32], j: usize| {
                let start = (kv * g.capacity + j) * g.head_dim;
                buffer[start..start + g.head_dim].to_vec()
            };
            let scores: Vec<f64> = (0..g.len)
                .map(|j| {
                    let k = row(keys, j);
                    (0..g.head_dim)
                        .map(|d| f64::from(q[h * g.head_dim + d]) * f64::from(k[d]))
                        .sum::<f64>()
                        * f64::from(scale)
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for (j, w) in weights.iter().enumerate() {
                let v = row(values, j);
                for d in 0..g.head_dim {
                    out[h * g.head_dim + d] += (w / total * f64::from(v[d])) as f32;
                }
            }
        }
        out
    }

    fn pseudo_random(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn matches_the_plain_computation_with_grouped_heads_and_spare_capacity() {
        for (len, head_dim) in [(1, 64), (7, 20), (300, 64)] {
            let g = Geometry {
                n_head: 6,
                n_kv_head: 2,
                head_dim,
                capacity: 320,
                len,
            };
            let q = pseudo_random(g.n_head * head_dim, 1);
            let keys = pseudo_random(g.n_kv_head * g.capacity * head_dim, 2);
            let values = pseudo_random(g.n_kv_head * g.capacity * head_dim, 3);
            let scale = 1.0 / (head_dim as f32).sqrt();
            let mut out = vec![f32::NAN; g.n_head * head_dim];
            attend(&q, &keys, &values, g, scale, &mut out);
            let expected = reference(&q, &keys, &values, g, scale);
            for (got, want) in out.iter().zip(&expected) {
                assert!((got - want).abs() < 1e-5, "len {len}: {got} vs {want}");
            }
        }
    }
}
