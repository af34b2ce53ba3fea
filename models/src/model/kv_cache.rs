//! The per-layer key/value cache, in f16 as llama.cpp keeps it (its default cache type): half
//! the memory of f32, and the attention reads the same rounded keys and values llama.cpp does.
//!
//! Keys and values live in one buffer each per layer, laid out `(n_kv_head, capacity,
//! head_dim)` so that one head's positions are contiguous for the attention's dot products.
//! Capacity grows in steps of [`GROWTH`] positions, up to the context length: the cache holds
//! what the sequence uses plus less than one step. (Doubling, as before, could leave almost
//! half of it unused, and the old buffer of every layer stayed alive until its copy.)

use candle_core::Result;
use half::f16;

/// Positions added when the cache is full: 256 positions of the default model's layer are
/// 192 KB, so growing copies little and wastes little.
const GROWTH: usize = 256;

pub(crate) struct KvCache {
    /// f16 bits, `(n_kv_head, capacity, head_dim)`.
    keys: Vec<u16>,
    values: Vec<u16>,
    n_kv_head: usize,
    head_dim: usize,
    capacity: usize,
    len: usize,
    max_len: usize,
}

/// The filled part of a layer's cache, for [`super::attention`].
pub(crate) struct KvView<'a> {
    /// f16 bits, `(n_kv_head, capacity, head_dim)`; positions `0..len` are filled.
    pub keys: &'a [u16],
    pub values: &'a [u16],
    pub capacity: usize,
    pub len: usize,
}

impl KvCache {
    pub(crate) fn new(n_kv_head: usize, head_dim: usize, max_len: usize) -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
            n_kv_head,
            head_dim,
            capacity: 0,
            len: 0,
            max_len,
        }
    }

    /// Forgets every position; the buffers stay for the next sequence.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `seq` positions: `k` and `v` are f32 `(seq, n_kv_head, head_dim)`, as the
    /// projections give them, rounded to f16 here.
    pub(crate) fn append(&mut self, k: &[f32], v: &[f32], seq: usize) -> Result<()> {
        let (heads, dim) = (self.n_kv_head, self.head_dim);
        let needed = self.len + seq;
        if needed > self.max_len {
            candle_core::bail!(
                "sequence of {needed} tokens exceeds the context length {}",
                self.max_len
            );
        }
        if k.len() != heads * seq * dim || v.len() != k.len() {
            candle_core::bail!(
                "kv cache: {} keys and {} values for {seq} positions of {heads} heads of {dim}",
                k.len(),
                v.len()
            );
        }
        if needed > self.capacity {
            self.grow(
                needed
                    .div_ceil(GROWTH)
                    .saturating_mul(GROWTH)
                    .min(self.max_len),
            );
        }
        let capacity = self.capacity;
        let rows = k
            .chunks_exact(dim.max(1))
            .zip(v.chunks_exact(dim.max(1)))
            .enumerate();
        for (row, (k, v)) in rows {
            let (t, h) = (row / heads, row % heads);
            let at = (h * capacity + self.len + t) * dim;
            store_f16(&mut self.keys[at..at + dim], k);
            store_f16(&mut self.values[at..at + dim], v);
        }
        self.len = needed;
        Ok(())
    }

    pub(crate) fn view(&self) -> KvView<'_> {
        KvView {
            keys: &self.keys,
            values: &self.values,
            capacity: self.capacity,
            len: self.len,
        }
    }

    /// Moves each head's filled positions into buffers of `capacity` positions.
    fn grow(&mut self, capacity: usize) {
        let (heads, dim, len) = (self.n_kv_head, self.head_dim, self.len);
        let relayout = |old: &[u16]| {
            let mut buffer = vec![0u16; heads * capacity * dim];
            for h in 0..heads {
                let from = h * self.capacity * dim;
                buffer[h * capacity * dim..][..len * dim]
                    .copy_from_slice(&old[from..from + len * dim]);
            }
            buffer
        };
        self.keys = relayout(&self.keys);
        self.values = relayout(&self.values);
        self.capacity = capacity;
    }
}

/// `out[i] = f16(values[i])`, round to nearest even (F16C's and ggml's rounding).
fn store_f16(out: &mut [u16], values: &[f32]) {
    for (out, value) in out.iter_mut().zip(values) {
        *out = f16::from_f32(*value).to_bits();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(cache: &KvCache, head: usize, position: usize) -> (Vec<f32>, Vec<f32>) {
        let view = cache.view();
        let at = (head * view.capacity + position) * cache.head_dim;
        let row = |buffer: &[u16]| {
            buffer[at..at + cache.head_dim]
                .iter()
                .map(|&b| f16::from_bits(b).to_f32())
                .collect()
        };
        (row(view.keys), row(view.values))
    }

    #[test]
    fn appends_across_growth_and_keeps_every_head_s_positions() {
        let (heads, dim) = (2, 4);
        let mut cache = KvCache::new(heads, dim, 600);
        // Position p of head h holds keys h*1000 + p and values -(h*1000 + p), exact in f16
        // below 2048.
        let mut position = 0;
        for seq in [1, 300, 5, 250] {
            let k: Vec<f32> = (position..position + seq)
                .flat_map(|p| {
                    (0..heads).flat_map(move |h| std::iter::repeat_n((h * 1000 + p) as f32, dim))
                })
                .collect();
            let v: Vec<f32> = k.iter().map(|x| -x).collect();
            cache.append(&k, &v, seq).expect("append");
            position += seq;
        }
        assert_eq!(cache.len(), 556);
        assert_eq!(
            cache.view().capacity,
            600,
            "grown in steps, capped at the context"
        );
        for h in 0..heads {
            for p in [0, 1, 299, 300, 306, 555] {
                let (k, v) = read(&cache, h, p);
                assert_eq!(k, vec![(h * 1000 + p) as f32; dim], "head {h} position {p}");
                assert_eq!(v, vec![-((h * 1000 + p) as f32); dim]);
            }
        }
        let err = cache.append(&[0.0; 2 * 45 * 4], &[0.0; 2 * 45 * 4], 45);
        let message = err.expect_err("past the context").to_string();
        assert!(
            message.contains("601 tokens exceeds the context length 600"),
            "{message}"
        );
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
