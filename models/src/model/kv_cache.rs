//! A growable per-layer key/value cache. Keys and values live in one preallocated buffer per
//! layer, `(1, n_kv_head, capacity, head_dim)`, written in place with `slice_set`; capacity
//! doubles when full, so appending a token costs O(1) copies instead of candle's
//! `Tensor::cat` of the whole cache at every step.

use candle_core::{CpuStorage, Result, Storage, Tensor};

const INITIAL_CAPACITY: usize = 256;

pub(crate) struct KvCache {
    keys: Option<Tensor>,
    values: Option<Tensor>,
    len: usize,
    max_len: usize,
}

impl KvCache {
    pub(crate) fn new(max_len: usize) -> Self {
        Self {
            keys: None,
            values: None,
            len: 0,
            max_len,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `k` and `v` (`(1, n_kv_head, seq, head_dim)`) and returns views of all cached
    /// keys and values.
    pub(crate) fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let seq = k.dim(2)?;
        let needed = self.len + seq;
        if needed > self.max_len {
            candle_core::bail!(
                "sequence of {needed} tokens exceeds the context length {}",
                self.max_len
            );
        }
        let capacity = self
            .keys
            .as_ref()
            .map(|t| t.dim(2))
            .transpose()?
            .unwrap_or(0);
        if needed > capacity {
            let mut new_capacity = capacity.max(INITIAL_CAPACITY);
            while new_capacity < needed {
                new_capacity *= 2;
            }
            let new_capacity = new_capacity.min(self.max_len);
            let (b, h, _, d) = k.dims4()?;
            let grow = |old: &Option<Tensor>| -> Result<Tensor> {
                let buffer = Tensor::zeros((b, h, new_capacity, d), k.dtype(), k.device())?;
                if let Some(old) = old
                    && self.len > 0
                {
                    buffer.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
                Ok(buffer)
            };
            self.keys = Some(grow(&self.keys)?);
            self.values = Some(grow(&self.values)?);
        }
        let (Some(keys), Some(values)) = (&self.keys, &self.values) else {
            candle_core::bail!("kv cache buffers missing after allocation");
        };
        keys.slice_set(&k.contiguous()?, 2, self.len)?;
        values.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((keys.narrow(2, 0, self.len)?, values.narrow(2, 0, self.len)?))
    }

    /// Runs `f` on the key and value buffers as f32 slices, `(n_kv_head, capacity, head_dim)`
    /// each, with the capacity and the number of filled positions; `None` when they are not
    /// contiguous f32 in memory (then the caller uses the views [`KvCache::append`] returned).
    pub(crate) fn with_buffers<R>(
        &self,
        f: impl FnOnce(&[f32], &[f32], usize, usize) -> R,
    ) -> Result<Option<R>> {
        let (Some(keys), Some(values)) = (&self.keys, &self.values) else {
            return Ok(None);
        };
        let capacity = keys.dim(2)?;
        let (key_storage, key_layout) = keys.storage_and_layout();
        let (value_storage, value_layout) = values.storage_and_layout();
        let plain =
            |layout: &candle_core::Layout| layout.is_contiguous() && layout.start_offset() == 0;
        match (&*key_storage, &*value_storage) {
            (Storage::Cpu(k), Storage::Cpu(v)) if plain(key_layout) && plain(value_layout) => {
                match (k, v) {
                    (CpuStorage::F32(k), CpuStorage::F32(v)) => {
                        Ok(Some(f(k, v, capacity, self.len)))
                    }
                    _ => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }
}
