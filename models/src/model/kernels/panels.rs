//! k-quant batches (prefill) as weight panels: a few weight rows (one per 32-bit vector lane)
//! unpacked to bytes and interleaved four weights at a time, so that one multiply-add of a
//! vector of weights by four activations of one token, broadcast, advances every row of the
//! panel at once. Each lane holds one row's whole integer sum: nothing is summed across lanes,
//! where the row-by-row kernels of `avx2_superblocks` reduce a vector per row, token and
//! super-block (about half their time in a batch). (llama.cpp's tiled kernel has the same idea
//! the other way round: it broadcasts weights against sixteen tokens.)
//!
//! Each lane sums its integers exactly, the sub-blocks' scales are applied in integers, and
//! the float steps per super-block (or per 64 weights) are those of [`super::superblocks`]
//! taken lane by lane, so the results are the same bit for bit as the row-by-row kernels' in
//! the three orders a batch takes ([`Accumulation::Rows`], [`Accumulation::RowsBatched`],
//! [`Accumulation::Tiled`]). Unpacking a panel costs about as much as multiplying it by a few
//! tokens, so only longer batches come here, split over the pool by rows so that each panel is
//! unpacked once per matrix product (`super::matvec`).
//!
//! This file holds the layout and the loop over panels and tokens; the products are
//! `avx512_panels` (sixteen rows, AVX512-VNNI) and `avx2_panels` (eight rows, AVX2).
//!
//! Unsafe code is what [`super::avx2`] allows: calling functions compiled for CPU features
//! detected at run time.

#![allow(unsafe_code)]

use super::activation_k::{SUM_GROUP, SUPER_BLOCK, SuperBlock};
use super::avx2::Avx2;
use super::avx2_superblocks::{q4k_weights, q5k_weights, q6k_weights};
use super::f16_at;
use super::format::{Accumulation, Products};
use super::superblocks::{SuperBlockFormat, scales_and_mins};
use std::arch::x86_64::_mm256_storeu_si256;

/// Tokens per group: each panel vector loaded once meets this many tokens.
pub(super) const TOKENS: usize = 4;
/// Groups of four weights per super-block.
pub(super) const GROUPS: usize = SUPER_BLOCK / 4;
/// Scales per super-block at most (Q6_K's, one per 16 weights).
pub(super) const MAX_SCALES: usize = SUPER_BLOCK / SUM_GROUP;
/// Pairs of the activations' 16-value sums per super-block.
pub(super) const PAIRS: usize = MAX_SCALES / 2;

/// Which panel kernel this CPU runs: only [`Panels::detect`] makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Panels {
    /// Sixteen rows per 512-bit vector, four-product sums in one `vpdpbusd`.
    Vnni512(super::avx512_panels::Vnni512),
    /// Eight rows per 256-bit vector, `vpmaddubsw` + `vpmaddwd`.
    Avx2(Avx2),
}

impl Panels {
    pub(crate) fn detect(avx2: Avx2) -> Self {
        match super::avx512_panels::Vnni512::detect() {
            Some(vnni) => Self::Vnni512(vnni),
            None => Self::Avx2(avx2),
        }
    }

    /// The product of every whole row of `row_bytes` bytes in `rows` with every token of
    /// `activations`, like [`super::superblocks::dot_tile`] and with the same results bit for
    /// bit, in any order but [`Accumulation::Lanes`] (which only single tokens and batches
    /// too short for panels take).
    pub(crate) fn dot_tile(
        self,
        format: SuperBlockFormat,
        accumulation: Accumulation,
        rows: &[u8],
        row_bytes: usize,
        activations: &[SuperBlock],
        out: &mut Products<'_>,
    ) {
        debug_assert_ne!(accumulation, Accumulation::Lanes);
        match self {
            Self::Vnni512(vnni) => {
                vnni.dot_tile(format, accumulation, rows, row_bytes, activations, out)
            }
            Self::Avx2(avx2) => {
                avx2.dot_panels(format, accumulation, rows, row_bytes, activations, out)
            }
        }
    }
}

/// Up to `ROWS` weight rows unpacked for the kernels. Rows missing at the end of a matrix
/// have zero weights, scales and `d`: their lanes compute zeros that are not stored.
pub(super) struct Panel<const ROWS: usize> {
    /// `[block][group of four weights][row]`: each row's four unsigned weights as one u32.
    pub weights: Vec<u32>,
    /// `[block][sub-block][row]`: each sub-block's scale (Q4_K, Q5_K: eight of 32 weights;
    /// Q6_K: sixteen of 16).
    pub scales: Vec<i32>,
    /// `[block][pair][row]`: two i16 multiplying the activations' 16-value sums `2p` and
    /// `2p + 1`: sub-block `p`'s min twice (Q4_K, Q5_K: the offsets), or Q6_K's scales of
    /// those sums (taking off the 32 its stored weights carry).
    pub pairs: Vec<u32>,
    /// `[block][row]`: the super-blocks' scales `d` and `dmin` (zero for Q6_K).
    pub d: Vec<f32>,
    pub dmin: Vec<f32>,
}

impl<const ROWS: usize> Panel<ROWS> {
    fn new(blocks: usize) -> Self {
        Self {
            weights: vec![0; blocks * GROUPS * ROWS],
            scales: vec![0; blocks * MAX_SCALES * ROWS],
            pairs: vec![0; blocks * PAIRS * ROWS],
            d: vec![0.0; blocks * ROWS],
            dmin: vec![0.0; blocks * ROWS],
        }
    }

    /// The panel's super-blocks, each as (weights, scales, pairs, d, dmin).
    #[allow(clippy::type_complexity)]
    pub(super) fn blocks(&self) -> impl Iterator<Item = (&[u32], &[i32], &[u32], &[f32], &[f32])> {
        (self.weights.chunks_exact(GROUPS * ROWS))
            .zip(self.scales.chunks_exact(MAX_SCALES * ROWS))
            .zip(self.pairs.chunks_exact(PAIRS * ROWS))
            .zip(self.d.chunks_exact(ROWS).zip(self.dmin.chunks_exact(ROWS)))
            .map(|(((weights, scales), pairs), (d, dmin))| (weights, scales, pairs, d, dmin))
    }

    /// Unpacks `rows` (at most `ROWS` whole rows of `row_bytes` bytes).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn fill(&mut self, format: SuperBlockFormat, rows: &[u8], row_bytes: usize) {
        self.weights.fill(0);
        self.scales.fill(0);
        self.pairs.fill(0);
        self.d.fill(0.0);
        self.dmin.fill(0.0);
        let pair = |low: i16, high: i16| u32::from(low as u16) | (u32::from(high as u16) << 16);
        for (r, row) in rows.chunks_exact(row_bytes).take(ROWS).enumerate() {
            for (b, block) in row.chunks_exact(format.block_bytes()).enumerate() {
                let vectors = match format {
                    SuperBlockFormat::Q4K => q4k_weights(block),
                    SuperBlockFormat::Q5K => q5k_weights(block),
                    SuperBlockFormat::Q6K => q6k_weights(block),
                };
                let mut bytes = [0u8; SUPER_BLOCK];
                for (chunk, vector) in bytes.chunks_exact_mut(32).zip(vectors) {
                    // SAFETY: `chunk` is 32 writable bytes.
                    unsafe { _mm256_storeu_si256(chunk.as_mut_ptr().cast(), vector) };
                }
                let weights = &mut self.weights[b * GROUPS * ROWS..][..GROUPS * ROWS];
                for (g, four) in bytes.chunks_exact(4).enumerate() {
                    weights[g * ROWS + r] =
                        u32::from_le_bytes([four[0], four[1], four[2], four[3]]);
                }
                let at = |index: usize| b * index * ROWS;
                match format {
                    SuperBlockFormat::Q4K | SuperBlockFormat::Q5K => {
                        self.d[at(1) + r] = f16_at(block, 0);
                        self.dmin[at(1) + r] = f16_at(block, 2);
                        let (scales, mins) = scales_and_mins(&block[4..16]);
                        for (s, (&scale, &min)) in scales.iter().zip(&mins).enumerate() {
                            self.scales[at(MAX_SCALES) + s * ROWS + r] = i32::from(scale);
                            let min = i16::from(min);
                            self.pairs[at(PAIRS) + s * ROWS + r] = pair(min, min);
                        }
                    }
                    SuperBlockFormat::Q6K => {
                        self.d[at(1) + r] = f16_at(block, 208);
                        let scales = &block[192..208];
                        for (s, &scale) in scales.iter().enumerate() {
                            self.scales[at(MAX_SCALES) + s * ROWS + r] = i32::from(scale as i8);
                        }
                        for (p, two) in scales.chunks_exact(2).enumerate() {
                            let (low, high) = (i16::from(two[0] as i8), i16::from(two[1] as i8));
                            self.pairs[at(PAIRS) + p * ROWS + r] = pair(low, high);
                        }
                    }
                }
            }
        }
    }
}

/// Super-blocks are stepped in this many parts: Q4_K's batched order steps per 64 weights
/// (see `superblocks::dot_row`), everything else per super-block.
pub(super) fn parts(format: SuperBlockFormat, accumulation: Accumulation) -> usize {
    if accumulation == Accumulation::RowsBatched && format == SuperBlockFormat::Q4K {
        SUPER_BLOCK / 64
    } else {
        1
    }
}

/// The product of every whole row of `rows` with every token of `activations`, panel by
/// panel of `ROWS` rows: each panel meets the tokens in groups of [`TOKENS`] through `group`,
/// then the rest one by one through `one` (both give each token's `ROWS` lanes).
///
/// Safety: the CPU has AVX2, FMA and F16C (the panels are unpacked with them).
pub(super) unsafe fn tile<const ROWS: usize>(
    format: SuperBlockFormat,
    rows: &[u8],
    row_bytes: usize,
    activations: &[SuperBlock],
    out: &mut Products<'_>,
    group: impl Fn(&Panel<ROWS>, [&[SuperBlock]; TOKENS]) -> [[f32; ROWS]; TOKENS],
    one: impl Fn(&Panel<ROWS>, [&[SuperBlock]; 1]) -> [[f32; ROWS]; 1],
) {
    let blocks = row_bytes / format.block_bytes();
    if blocks == 0 {
        return;
    }
    let tokens: Vec<&[SuperBlock]> = activations.chunks_exact(blocks).collect();
    let mut panel = Panel::<ROWS>::new(blocks);
    for (p, rows) in rows.chunks(ROWS * row_bytes).enumerate() {
        // SAFETY: the caller's contract.
        unsafe { panel.fill(format, rows, row_bytes) };
        let count = rows.len() / row_bytes;
        let mut store = |token: usize, lanes: [f32; ROWS]| {
            for (r, &value) in lanes.iter().enumerate().take(count) {
                out.set(p * ROWS + r, token, value);
            }
        };
        let mut t = 0;
        while t + TOKENS <= tokens.len() {
            let sums = group(&panel, std::array::from_fn(|i| tokens[t + i]));
            for (i, lanes) in sums.into_iter().enumerate() {
                store(t + i, lanes);
            }
            t += TOKENS;
        }
        for (t, token) in tokens.iter().enumerate().skip(t) {
            let [lanes] = one(&panel, [token]);
            store(t, lanes);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::kernels::superblocks::dot_tile as portable_tile;
    use crate::model::kernels::superblocks::tests::{
        EXTREME_SCALES, FORMATS, activations, random_blocks,
    };

    /// Checks that `panels` gives the portable kernel's bits in every batch order, for panels
    /// whole and cut short, groups of four tokens and the rest.
    pub(in crate::model::kernels) fn agree_with_portable_bit_for_bit(panels: Panels) {
        let orders = [
            Accumulation::Rows,
            Accumulation::RowsBatched,
            Accumulation::Tiled,
        ];
        for ((format, _), accumulation) in FORMATS.into_iter().flat_map(|f| orders.map(|a| (f, a)))
        {
            for (blocks, rows, tokens) in [(1, 16, 4), (3, 17, 9), (2, 5, 6), (1, 33, 1)] {
                let columns = blocks * SUPER_BLOCK;
                let row_bytes = blocks * format.block_bytes();
                let seed = (blocks * 100 + rows * 10 + tokens) as u64;
                let bytes = random_blocks(format, rows * blocks, seed, &EXTREME_SCALES);
                let batch: Vec<SuperBlock> = (0..tokens)
                    .flat_map(|t| activations(columns, seed + t as u64, t % 3))
                    .collect();
                let mut want = vec![0.0; rows * tokens];
                let mut got = vec![0.0; rows * tokens];
                let stride = rows;
                let out = &mut Products {
                    values: &mut want,
                    stride,
                };
                portable_tile(format, accumulation, &bytes, row_bytes, &batch, out);
                let out = &mut Products {
                    values: &mut got,
                    stride,
                };
                panels.dot_tile(format, accumulation, &bytes, row_bytes, &batch, out);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&want),
                    bits(&got),
                    "{panels:?} {format:?} {accumulation:?}: {blocks} blocks, {rows} rows, \
                     {tokens} tokens"
                );
            }
        }
    }

    #[test]
    fn avx2_panels_and_portable_agree_bit_for_bit() {
        let Some(avx2) = Avx2::detect() else {
            eprintln!("SKIPPED: this CPU has no AVX2");
            return;
        };
        agree_with_portable_bit_for_bit(Panels::Avx2(avx2));
    }
}
