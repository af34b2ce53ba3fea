//! Attention for a batch of at least [`TILE`] query tokens in llama.cpp's arithmetic: the
//! tiled path its CPU backend takes for such batches
//! (`ggml_compute_forward_flash_attn_ext_tiled`, AVX2 build). Keys and values are read in
//! tiles of [`TILE`] positions from position 0; per query row and tile:
//!
//! - each score is the f32 query (not rounded to f16, unlike the one-row path) times the key,
//!   summed dimension by dimension in one chain of fused multiply-adds, then times the scale;
//! - the tile's maximum updates the row's running maximum, and a new maximum rescales the
//!   running sums by `exp(old - new)`;
//! - the tile's weights are ggml's vector `exp` of `score - max`, summed eight lanes at a time
//!   in its reduction order and added in f64;
//! - the weighted values accumulate **in f32**, position by position with fused
//!   multiply-adds.
//!
//! Every one of these is per row, so the rows of a batch can be grouped any way: here one unit
//! of work is a key/value head with a block of query tokens, which share the tiles (a key tile
//! is converted to f32 and transposed once for all of them, so that eight positions' scores
//! take one vector step per dimension). The loops are plain Rust written lane by lane; on a CPU
//! with FMA they are compiled again with it enabled so that they vectorize.

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use rayon::prelude::*;

use super::attention::Geometry;
use super::elementwise::expf_vector_lane;
use super::kv_cache::KvView;

/// llama.cpp's tile (`GGML_FA_TILE_Q`, `GGML_FA_TILE_KV`): batches of at least this many
/// query tokens take this path, and key/value tiles are this many positions long.
pub(crate) const TILE: usize = 64;

/// ggml's AVX2 lanes, which group the softmax's sums.
const LANES: usize = 8;

/// [`super::attention::attend`] for a batch of `seq >= TILE` tokens (its caller checked the
/// geometry).
pub(crate) fn attend(
    queries: &[f32],
    cache: &KvView<'_>,
    geometry: Geometry,
    scale: f32,
    (seq, out): (usize, &mut [f32]),
) {
    let Geometry {
        n_head,
        n_kv_head,
        head_dim,
    } = geometry;
    let group = (n_head / n_kv_head.max(1)).max(1);
    let blocks = seq.div_ceil(TILE);
    let units: Vec<(usize, usize)> = (0..n_kv_head)
        .flat_map(|kv| (0..blocks).map(move |b| (kv, b)))
        .collect();
    let fma = has_fma();
    let results: Vec<Vec<f32>> = units
        .par_iter()
        .map(|&(kv, block)| {
            let tokens = block * TILE..((block + 1) * TILE).min(seq);
            let unit = Unit {
                queries,
                cache,
                seq,
                n_head,
                head_dim,
                heads: kv * group..(kv + 1) * group,
                tokens,
                kv,
                scale,
            };
            unit.run(fma)
        })
        .collect();
    for (&(kv, block), result) in units.iter().zip(&results) {
        let tokens = block * TILE..((block + 1) * TILE).min(seq);
        let mut rows = result.chunks_exact(head_dim);
        for h in kv * group..(kv + 1) * group {
            for t in tokens.clone() {
                if let Some(row) = rows.next() {
                    out[(t * n_head + h) * head_dim..][..head_dim].copy_from_slice(row);
                }
            }
        }
    }
}

/// Whether the CPU runs [`Unit::run_fma`] (AVX2 and FMA).
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One key/value head and a block of query tokens.
struct Unit<'a> {
    queries: &'a [f32],
    cache: &'a KvView<'a>,
    seq: usize,
    /// Query heads per token: the queries are `(seq, n_head, head_dim)`.
    n_head: usize,
    head_dim: usize,
    heads: std::ops::Range<usize>,
    tokens: std::ops::Range<usize>,
    kv: usize,
    scale: f32,
}

/// One query row's running state.
struct Row {
    max: f32,
    sum: f32,
    values: Vec<f32>,
}

impl Unit<'_> {
    /// The block's rows, head by head and token by token within a head.
    #[allow(unsafe_code)]
    fn run(&self, fma: bool) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: the caller saw AVX2 and FMA on this CPU (`has_fma`).
            return unsafe { self.run_fma() };
        }
        let _ = fma;
        self.run_lanes()
    }

    /// [`Unit::run_lanes`] compiled with FMA and AVX2.
    ///
    /// # Safety
    /// The CPU must have FMA and AVX2.
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_fma(&self) -> Vec<f32> {
        self.run_lanes()
    }

    #[inline(always)]
    fn run_lanes(&self) -> Vec<f32> {
        let d = self.head_dim;
        let first = self.cache.len - self.seq;
        let end = first + self.tokens.end;
        let base = self.kv * self.cache.capacity * d;
        let mut rows: Vec<Row> = (0..self.heads.len() * self.tokens.len())
            .map(|_| Row {
                max: f32::NEG_INFINITY,
                sum: 0.0,
                values: vec![0.0; d],
            })
            .collect();
        // The tile's keys transposed, `(d, TILE)`, and its values, `(TILE, d)`, in f32.
        let mut keys = vec![0.0f32; d * TILE];
        let mut values = vec![0.0f32; TILE * d];
        let mut row_keys = vec![0.0f32; d];
        let mut scores = [0.0f32; TILE];
        for start in (0..end).step_by(TILE) {
            let n = (end - start).min(TILE);
            for tk in 0..n {
                let at = base + (start + tk) * d;
                f16_bits(&self.cache.keys[at..at + d]).convert_to_f32_slice(&mut row_keys);
                for (dim, &k) in row_keys.iter().enumerate() {
                    keys[dim * TILE + tk] = k;
                }
                f16_bits(&self.cache.values[at..at + d])
                    .convert_to_f32_slice(&mut values[tk * d..(tk + 1) * d]);
            }
            for (r, row) in rows.iter_mut().enumerate() {
                let (h, t) = (
                    self.heads.start + r / self.tokens.len(),
                    self.tokens.start + r % self.tokens.len(),
                );
                // Positions `0..=first + t` are visible to token `t`.
                let visible = (first + t + 1).saturating_sub(start).min(n);
                if visible == 0 {
                    continue;
                }
                let q = &self.queries[(t * self.n_head + h) * d..][..d];
                tile_scores(q, &keys, self.scale, visible, &mut scores);
                row.add_tile(&mut scores, &values[..visible * d]);
            }
        }
        let mut out = Vec::with_capacity(rows.len() * d);
        for row in &rows {
            let inverse = if row.sum == 0.0 { 0.0 } else { 1.0 / row.sum };
            out.extend(row.values.iter().map(|&v| v * inverse));
        }
        out
    }
}

/// The cache's f16 bits as `half` values.
fn f16_bits(bits: &[u16]) -> &[f16] {
    bits.reinterpret_cast::<f16>()
}

/// `scores[tk] = (q · key tk) · scale` for the `visible` positions of the transposed tile
/// (one fused multiply-add chain per score, dimension by dimension, as ggml's `simd_gemm`
/// gives each lane), and `-inf` for the rest of the tile.
#[inline(always)]
fn tile_scores(q: &[f32], keys: &[f32], scale: f32, visible: usize, scores: &mut [f32; TILE]) {
    let mut acc = [0.0f32; TILE];
    for (dim, &qd) in q.iter().enumerate() {
        let column = &keys[dim * TILE..(dim + 1) * TILE];
        for (a, &k) in acc.iter_mut().zip(column) {
            *a = k.mul_add(qd, *a);
        }
    }
    for (tk, (s, a)) in scores.iter_mut().zip(acc).enumerate() {
        // The mask adds 0 to a visible score and -inf to the others.
        *s = if tk < visible {
            a * scale + 0.0
        } else {
            f32::NEG_INFINITY
        };
    }
}

impl Row {
    /// One tile's scores (turned into weights here) and its visible positions' values.
    #[inline(always)]
    fn add_tile(&mut self, scores: &mut [f32; TILE], values: &[f32]) {
        let tile_max = scores
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, |m, s| if m > s { m } else { s });
        if tile_max == f32::NEG_INFINITY {
            return;
        }
        let new_max = self.max.max(tile_max);
        if new_max > self.max {
            let ms = (self.max - new_max).exp();
            for v in &mut self.values {
                *v *= ms;
            }
            self.sum *= ms;
        }
        self.max = new_max;
        let mut total = 0.0f64;
        for lanes in scores.chunks_exact_mut(LANES) {
            for s in lanes.iter_mut() {
                *s = expf_vector_lane(*s - new_max);
            }
            // ggml's eight-lane sum: high half plus low half, then pairs, then the last two.
            let h: [f32; 4] = std::array::from_fn(|i| lanes[i + 4] + lanes[i]);
            let (a, b) = (h[0] + h[2], h[1] + h[3]);
            total += f64::from(a + b);
        }
        self.sum = (f64::from(self.sum) + total) as f32;
        let d = self.values.len();
        for (value, &w) in values.chunks_exact(d).zip(scores.iter()) {
            for (acc, &v) in self.values.iter_mut().zip(value) {
                *acc = v.mul_add(w, *acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kv_cache::KvCache;

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

    /// A cache holding `before` earlier positions and a batch of `seq`, with its queries.
    fn setup(g: Geometry, before: usize, seq: usize) -> (KvCache, Vec<f32>, Vec<f32>, Vec<f32>) {
        let total = before + seq;
        let keys = pseudo_random(g.n_kv_head * total * g.head_dim, 2);
        let values = pseudo_random(g.n_kv_head * total * g.head_dim, 3);
        let mut cache = KvCache::new(g.n_kv_head, g.head_dim, 1024);
        for (from, count) in [(0, before), (before, seq)] {
            // (tokens, heads, head_dim), as the projections give them.
            let part = |buffer: &[f32]| -> Vec<f32> {
                (from..from + count)
                    .flat_map(|t| (0..g.n_kv_head).map(move |h| (h * total + t) * g.head_dim))
                    .flat_map(|at| buffer[at..at + g.head_dim].to_vec())
                    .collect()
            };
            cache
                .append(&part(&keys), &part(&values), count)
                .expect("append");
        }
        let queries: Vec<f32> = pseudo_random(g.n_head * seq * g.head_dim, 1)
            .iter()
            .map(|x| x * 8.0)
            .collect();
        (cache, keys, values, queries)
    }

    #[test]
    fn tiles_match_the_plain_computation_over_several_tiles() {
        let g = Geometry {
            n_head: 4,
            n_kv_head: 2,
            head_dim: 64,
        };
        let (before, seq) = (70, 130);
        let (cache, keys, values, queries) = setup(g, before, seq);
        let mut out = vec![f32::NAN; seq * g.n_head * g.head_dim];
        attend(&queries, &cache.view(), g, 0.125, (seq, &mut out));
        let total = before + seq;
        let round = |x: f32| f64::from(f16::from_f32(x).to_f32());
        for t in [0, 1, 63, 64, 100, seq - 1] {
            for h in 0..g.n_head {
                let kv = h / 2;
                let q = &queries[(t * g.n_head + h) * 64..][..64];
                let len = before + t + 1;
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        let k = &keys[(kv * total + j) * 64..][..64];
                        q.iter()
                            .zip(k)
                            .map(|(&a, &b)| f64::from(a) * round(b))
                            .sum::<f64>()
                            * 0.125
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = weights.iter().sum();
                for d in 0..64 {
                    let want: f64 = weights
                        .iter()
                        .enumerate()
                        .map(|(j, w)| w / sum * round(values[(kv * total + j) * 64 + d]))
                        .sum();
                    let got = out[(t * g.n_head + h) * 64 + d];
                    assert!(
                        (f64::from(got) - want).abs() < 1e-5,
                        "{t} {h} {d}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_fma_build_and_the_plain_lanes_agree_bit_for_bit() {
        let g = Geometry {
            n_head: 2,
            n_kv_head: 1,
            head_dim: 64,
        };
        let (cache, _, _, queries) = setup(g, 10, 70);
        let view = cache.view();
        let unit = Unit {
            queries: &queries,
            cache: &view,
            seq: 70,
            n_head: 2,
            head_dim: 64,
            heads: 0..2,
            tokens: 64..70,
            kv: 0,
            scale: 0.125,
        };
        assert_eq!(unit.run(has_fma()), unit.run_lanes());
    }
}
