//! k-quant batches (prefill) on AVX512-VNNI as weight panels: sixteen weight rows unpacked to
//! bytes and interleaved four weights at a time, so that one `vpdpbusd` on 512-bit vectors
//! multiplies four weights of each of the sixteen rows by the same four activations of one
//! token, broadcast: 64 products per instruction, where the row-by-row kernels of
//! `avx2_superblocks` take two or three instructions for 32. (llama.cpp's tiled VNNI kernel
//! has the same idea the other way round: it broadcasts weights against sixteen tokens.)
//!
//! Each lane (one row with one token) sums its integers exactly, the sub-blocks' scales are
//! applied in i32, and the float steps per super-block (or per 64 weights) are those of
//! [`super::superblocks`] taken lane by lane, so the results are the same bit for bit as the
//! row-by-row kernels' in the three orders a batch takes ([`Accumulation::Rows`],
//! [`Accumulation::RowsBatched`], [`Accumulation::Tiled`]). Unpacking a panel costs about as
//! much as multiplying it by a few tokens, so only longer batches come here, split over the
//! pool by rows so that each panel is unpacked once per matrix product (`super::matvec`).
//!
//! Unsafe code is what [`super::avx2`] allows: calling functions compiled for CPU features
//! detected at run time, and unaligned loads from slices whose lengths the indexing checks.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m512, __m512i, _mm256_storeu_si256, _mm512_add_epi32, _mm512_cvtepi32_ps,
    _mm512_dpbusd_epi32, _mm512_dpwssd_epi32, _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_loadu_ps,
    _mm512_loadu_si512, _mm512_mul_ps, _mm512_mullo_epi32, _mm512_set1_epi32, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_setzero_si512, _mm512_slli_epi32, _mm512_storeu_ps, _mm512_sub_epi32,
    _mm512_sub_ps,
};

use super::activation_k::{SUM_GROUP, SUPER_BLOCK, SuperBlock};
use super::avx2_superblocks::{q4k_weights, q5k_weights, q6k_weights};
use super::f16_at;
use super::format::{Accumulation, Products};
use super::superblocks::{SuperBlockFormat, scales_and_mins};

/// Weight rows per panel: one i32 lane each.
const ROWS: usize = 16;
/// Tokens per group: each panel vector loaded once meets this many tokens.
const TOKENS: usize = 4;
/// Groups of four weights per super-block.
const GROUPS: usize = SUPER_BLOCK / 4;
/// Scales per super-block at most (Q6_K's, one per 16 weights).
const MAX_SCALES: usize = SUPER_BLOCK / SUM_GROUP;
/// Pairs of the activations' 16-value sums per super-block.
const PAIRS: usize = MAX_SCALES / 2;

/// Proof that this CPU has AVX512F/BW/VL and AVX512-VNNI besides AVX2/FMA/F16C: only
/// [`Panels::detect`] makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Panels(());

impl Panels {
    pub(crate) fn detect() -> Option<Self> {
        let available = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        available.then_some(Self(()))
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
        // SAFETY: `self` exists only when the CPU features were detected.
        unsafe { tile(format, accumulation, rows, row_bytes, activations, out) }
    }
}

/// Up to [`ROWS`] weight rows unpacked for the kernel. Rows missing at the end of a matrix
/// have zero weights, scales and `d`: their lanes compute zeros that are not stored.
struct Panel {
    /// `[block][group of four weights][row]`: each row's four unsigned weights as one u32.
    weights: Vec<u32>,
    /// `[block][sub-block][row]`: each sub-block's scale (Q4_K, Q5_K: eight of 32 weights;
    /// Q6_K: sixteen of 16).
    scales: Vec<i32>,
    /// `[block][pair][row]`: two i16 multiplying the activations' 16-value sums `2p` and
    /// `2p + 1`: sub-block `p`'s min twice (Q4_K, Q5_K: the offsets), or Q6_K's scales of
    /// those sums (taking off the 32 its stored weights carry).
    pairs: Vec<u32>,
    /// `[block][row]`: the super-blocks' scales `d` and `dmin` (zero for Q6_K).
    d: Vec<f32>,
    dmin: Vec<f32>,
}

impl Panel {
    fn new(blocks: usize) -> Self {
        Self {
            weights: vec![0; blocks * GROUPS * ROWS],
            scales: vec![0; blocks * MAX_SCALES * ROWS],
            pairs: vec![0; blocks * PAIRS * ROWS],
            d: vec![0.0; blocks * ROWS],
            dmin: vec![0.0; blocks * ROWS],
        }
    }

    /// Unpacks `rows` (at most [`ROWS`] whole rows of `row_bytes` bytes).
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

/// [`Panels::dot_tile`]: panel by panel, each meeting the tokens in groups of [`TOKENS`], then
/// the rest one by one.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile(
    format: SuperBlockFormat,
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    activations: &[SuperBlock],
    out: &mut Products<'_>,
) {
    let blocks = row_bytes / format.block_bytes();
    if blocks == 0 {
        return;
    }
    // Only Q4_K's batched order steps per 64 weights (see `superblocks::dot_row`).
    let parts = if accumulation == Accumulation::RowsBatched && format == SuperBlockFormat::Q4K {
        SUPER_BLOCK / 64
    } else {
        1
    };
    let tokens: Vec<&[SuperBlock]> = activations.chunks_exact(blocks).collect();
    let mut panel = Panel::new(blocks);
    for (p, rows) in rows.chunks(ROWS * row_bytes).enumerate() {
        panel.fill(format, rows, row_bytes);
        let count = rows.len() / row_bytes;
        let first = p * ROWS;
        let mut t = 0;
        while t < tokens.len() {
            if t + TOKENS <= tokens.len() {
                let group: [&[SuperBlock]; TOKENS] = std::array::from_fn(|i| tokens[t + i]);
                let sums = dot(format, accumulation, parts, &panel, group);
                for (i, sums) in sums.into_iter().enumerate() {
                    store(out, first, count, t + i, sums);
                }
                t += TOKENS;
            } else {
                let [sums] = dot(format, accumulation, parts, &panel, [tokens[t]]);
                store(out, first, count, t, sums);
                t += 1;
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn store(out: &mut Products<'_>, first: usize, count: usize, token: usize, sums: __m512) {
    let mut lanes = [0.0f32; ROWS];
    // SAFETY: `lanes` is 16 writable f32.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sums) };
    for (r, &value) in lanes.iter().enumerate().take(count) {
        out.set(first + r, token, value);
    }
}

/// The panel with `T` tokens in `format`: Q6_K's sub-blocks are 16 weights (four groups),
/// the others' 32 (eight).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn dot<const T: usize>(
    format: SuperBlockFormat,
    accumulation: Accumulation,
    parts: usize,
    panel: &Panel,
    tokens: [&[SuperBlock]; T],
) -> [__m512; T] {
    match format {
        SuperBlockFormat::Q6K => dot_panel::<T, 4, true>(accumulation, parts, panel, tokens),
        _ => dot_panel::<T, 8, false>(accumulation, parts, panel, tokens),
    }
}

/// The first 16 f32 of `values`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn load_ps(values: &[f32]) -> __m512 {
    let values = &values[..ROWS];
    // SAFETY: the indexing above checked that 16 values are readable.
    unsafe { _mm512_loadu_ps(values.as_ptr()) }
}

/// The first 16 four-byte values of `values` as i32 lanes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn load_i32<T: Copy>(values: &[T]) -> __m512i {
    const { assert!(size_of::<T>() == 4) };
    let values = &values[..ROWS];
    // SAFETY: the indexing above checked that 64 bytes are readable.
    unsafe { _mm512_loadu_si512(values.as_ptr().cast()) }
}

/// The four bytes of `bytes` from `at`, broadcast to every lane.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn broadcast<T: Copy>(values: &[T], at: usize) -> __m512i {
    let bytes = &values[at..at + 4 / size_of::<T>()];
    // SAFETY: the indexing above checked that 4 bytes are readable.
    let word = unsafe { bytes.as_ptr().cast::<i32>().read_unaligned() };
    _mm512_set1_epi32(word)
}

/// The products of a panel's rows (lanes) with `T` tokens. `GROUPS_PER_SUB`: groups of four
/// weights per sub-block (one scale each); `Q6`: the stored weights carry Q6_K's +32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn dot_panel<const T: usize, const GROUPS_PER_SUB: usize, const Q6: bool>(
    accumulation: Accumulation,
    parts: usize,
    panel: &Panel,
    tokens: [&[SuperBlock]; T],
) -> [__m512; T] {
    let subs = GROUPS / GROUPS_PER_SUB;
    let (subs_per_part, pairs_per_part) = (subs / parts, PAIRS / parts);
    let zero = _mm512_setzero_si512();
    let mut total = [_mm512_setzero_ps(); T];
    let mut offsets = [_mm512_setzero_ps(); T];
    let blocks = (panel.weights.chunks_exact(GROUPS * ROWS))
        .zip(panel.scales.chunks_exact(MAX_SCALES * ROWS))
        .zip(panel.pairs.chunks_exact(PAIRS * ROWS))
        .zip(
            panel
                .d
                .chunks_exact(ROWS)
                .zip(panel.dmin.chunks_exact(ROWS)),
        );
    for (b, (((weights, scales), pairs), (d_w, dmin_w))) in blocks.enumerate() {
        let a: [&SuperBlock; T] = std::array::from_fn(|t| &tokens[t][b]);
        let (d_w, dmin_w) = (load_ps(d_w), load_ps(dmin_w));
        for part in 0..parts {
            let mut sums = [zero; T];
            for s in part * subs_per_part..(part + 1) * subs_per_part {
                let mut raw = [zero; T];
                for g in s * GROUPS_PER_SUB..(s + 1) * GROUPS_PER_SUB {
                    let w = load_i32(&weights[g * ROWS..]);
                    for t in 0..T {
                        raw[t] = _mm512_dpbusd_epi32(raw[t], w, broadcast(&a[t].qs, 4 * g));
                    }
                }
                let scale = load_i32(&scales[s * ROWS..]);
                for t in 0..T {
                    sums[t] = _mm512_add_epi32(sums[t], _mm512_mullo_epi32(raw[t], scale));
                }
            }
            // The part's offsets (Q6_K: the 32 its stored weights carry, times the
            // activations' sums and the scales, taken off here).
            let mut offset = [zero; T];
            for p in part * pairs_per_part..(part + 1) * pairs_per_part {
                let m = load_i32(&pairs[p * ROWS..]);
                for t in 0..T {
                    offset[t] = _mm512_dpwssd_epi32(offset[t], m, broadcast(&a[t].sums, 2 * p));
                }
            }
            for t in 0..T {
                let (sum, offset) = if Q6 {
                    let carried = _mm512_slli_epi32::<5>(offset[t]);
                    (_mm512_sub_epi32(sums[t], carried), zero)
                } else {
                    (sums[t], offset[t])
                };
                let (sum, offset) = (_mm512_cvtepi32_ps(sum), _mm512_cvtepi32_ps(offset));
                let d_a = _mm512_set1_ps(a[t].d);
                if accumulation == Accumulation::Tiled {
                    // `superblocks::tiled_step`, lane by lane.
                    // (`-(dmin · offset) + x` fused is `(-dmin) · offset + x`, zeros' signs too.)
                    let block = _mm512_fnmadd_ps(dmin_w, offset, _mm512_mul_ps(d_w, sum));
                    total[t] = _mm512_fmadd_ps(block, d_a, total[t]);
                } else {
                    total[t] = _mm512_fmadd_ps(sum, _mm512_mul_ps(d_w, d_a), total[t]);
                    offsets[t] = _mm512_fmadd_ps(offset, _mm512_mul_ps(dmin_w, d_a), offsets[t]);
                }
            }
        }
    }
    std::array::from_fn(|t| {
        if accumulation == Accumulation::Tiled {
            total[t]
        } else {
            _mm512_sub_ps(total[t], offsets[t])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::superblocks::dot_tile as portable_tile;
    use crate::model::kernels::superblocks::tests::{
        EXTREME_SCALES, FORMATS, activations, random_blocks,
    };

    #[test]
    fn panels_and_portable_agree_bit_for_bit() {
        let Some(panels) = Panels::detect() else {
            eprintln!("SKIPPED: this CPU has no AVX512-VNNI");
            return;
        };
        let orders = [
            Accumulation::Rows,
            Accumulation::RowsBatched,
            Accumulation::Tiled,
        ];
        for ((format, _), accumulation) in FORMATS.into_iter().flat_map(|f| orders.map(|a| (f, a)))
        {
            // Panels whole and cut short, groups of four tokens and the rest.
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
                    "{format:?} {accumulation:?}: {blocks} blocks, {rows} rows, {tokens} tokens"
                );
            }
        }
    }
}
