//! The products of `super::panels` on AVX2 without VNNI: eight rows per panel. One
//! `vpmaddubsw` multiplies four weights of each of the eight rows by the same four activations
//! of one token, broadcast, into two i16 sums per row; a few of those are added as i16 and one
//! `vpmaddwd` by the sub-block's scale (each row's, in both halves of its lane) widens them
//! into the row's i32 sum already scaled. ggml's AVX2 k-quant kernels apply the scales with the
//! same `vpmaddwd`; the integers are exact either way, so the results are those of the
//! row-by-row kernels bit for bit.
//!
//! Unsafe code is what [`super::avx2`] allows: calling functions compiled for CPU features
//! detected at run time, and unaligned loads from slices whose lengths the indexing checks.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256, __m256i, _mm256_add_epi16, _mm256_add_epi32, _mm256_and_si256, _mm256_cvtepi32_ps,
    _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_madd_epi16,
    _mm256_maddubs_epi16, _mm256_mul_ps, _mm256_or_si256, _mm256_set1_epi32, _mm256_set1_ps,
    _mm256_setzero_ps, _mm256_setzero_si256, _mm256_slli_epi32, _mm256_storeu_ps, _mm256_sub_epi32,
    _mm256_sub_ps,
};

use super::activation_k::SuperBlock;
use super::avx2::Avx2;
use super::format::{Accumulation, Products};
use super::panels::{self, GROUPS, PAIRS, Panel, TOKENS};
use super::superblocks::SuperBlockFormat;

/// Weight rows per panel: one i32 lane each.
const ROWS: usize = 8;

impl Avx2 {
    /// [`panels::Panels::dot_tile`] on eight-row panels.
    pub(crate) fn dot_panels(
        self,
        format: SuperBlockFormat,
        accumulation: Accumulation,
        rows: &[u8],
        row_bytes: usize,
        activations: &[SuperBlock],
        out: &mut Products<'_>,
    ) {
        // SAFETY: an `Avx2` exists only when the CPU features were detected.
        unsafe { tile(format, accumulation, rows, row_bytes, activations, out) }
    }
}

/// [`Avx2::dot_panels`].
#[target_feature(enable = "avx2,fma,f16c")]
fn tile(
    format: SuperBlockFormat,
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    activations: &[SuperBlock],
    out: &mut Products<'_>,
) {
    let parts = panels::parts(format, accumulation);
    let lanes = |sums: __m256| {
        let mut lanes = [0.0f32; ROWS];
        // SAFETY: `lanes` is 8 writable f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sums) };
        lanes
    };
    // SAFETY: the CPU has AVX2, FMA and F16C (this function's features).
    unsafe {
        panels::tile::<ROWS>(
            format,
            rows,
            row_bytes,
            activations,
            out,
            |panel, group| dot::<TOKENS>(format, accumulation, parts, panel, group).map(lanes),
            |panel, one| dot::<1>(format, accumulation, parts, panel, one).map(lanes),
        )
    }
}

/// The panel with `T` tokens in `format`. Q6_K's sub-blocks are 16 weights (four groups) and
/// its stored weights below 64, so two `vpmaddubsw` sums fit an i16 (2 · 2 · 63 · 128 <
/// 32,768); the others' sub-blocks are 32 weights (eight groups) below 32, four at a time.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot<const T: usize>(
    format: SuperBlockFormat,
    accumulation: Accumulation,
    parts: usize,
    panel: &Panel<ROWS>,
    tokens: [&[SuperBlock]; T],
) -> [__m256; T] {
    match format {
        SuperBlockFormat::Q6K => dot_panel::<T, 4, 2, true>(accumulation, parts, panel, tokens),
        _ => dot_panel::<T, 8, 4, false>(accumulation, parts, panel, tokens),
    }
}

/// The first 8 f32 of `values`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load_ps(values: &[f32]) -> __m256 {
    let values = &values[..ROWS];
    // SAFETY: the indexing above checked that 8 values are readable.
    unsafe { _mm256_loadu_ps(values.as_ptr()) }
}

/// The first 8 four-byte values of `values` as i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn load_i32<T: Copy>(values: &[T]) -> __m256i {
    const { assert!(size_of::<T>() == 4) };
    let values = &values[..ROWS];
    // SAFETY: the indexing above checked that 32 bytes are readable.
    unsafe { _mm256_loadu_si256(values.as_ptr().cast()) }
}

/// The four bytes of `values` from `at`, broadcast to every lane.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn broadcast<T: Copy>(values: &[T], at: usize) -> __m256i {
    let bytes = &values[at..at + 4 / size_of::<T>()];
    // SAFETY: the indexing above checked that 4 bytes are readable.
    let word = unsafe { bytes.as_ptr().cast::<i32>().read_unaligned() };
    _mm256_set1_epi32(word)
}

/// Each lane's i32 scale (below 2^15 in magnitude) as an i16 in both halves, for
/// `vpmaddwd`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn doubled(scale: __m256i) -> __m256i {
    let low = _mm256_and_si256(scale, _mm256_set1_epi32(0xFFFF));
    _mm256_or_si256(low, _mm256_slli_epi32::<16>(scale))
}

/// The products of a panel's rows (lanes) with `T` tokens. `GROUPS_PER_SUB`: groups of four
/// weights per sub-block (one scale each); `WIDEN`: groups summed as i16 before widening;
/// `Q6`: the stored weights carry Q6_K's +32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot_panel<const T: usize, const GROUPS_PER_SUB: usize, const WIDEN: usize, const Q6: bool>(
    accumulation: Accumulation,
    parts: usize,
    panel: &Panel<ROWS>,
    tokens: [&[SuperBlock]; T],
) -> [__m256; T] {
    let subs = GROUPS / GROUPS_PER_SUB;
    let (subs_per_part, pairs_per_part) = (subs / parts, PAIRS / parts);
    let zero = _mm256_setzero_si256();
    let mut total = [_mm256_setzero_ps(); T];
    let mut offsets = [_mm256_setzero_ps(); T];
    for (b, (weights, scales, pairs, d_w, dmin_w)) in panel.blocks().enumerate() {
        let a: [&SuperBlock; T] = std::array::from_fn(|t| &tokens[t][b]);
        let (d_w, dmin_w) = (load_ps(d_w), load_ps(dmin_w));
        for part in 0..parts {
            let mut sums = [zero; T];
            for s in part * subs_per_part..(part + 1) * subs_per_part {
                let scale = doubled(load_i32(&scales[s * ROWS..]));
                for first in (s * GROUPS_PER_SUB..(s + 1) * GROUPS_PER_SUB).step_by(WIDEN) {
                    let mut raw = [zero; T];
                    for g in first..first + WIDEN {
                        let w = load_i32(&weights[g * ROWS..]);
                        for t in 0..T {
                            let products = _mm256_maddubs_epi16(w, broadcast(&a[t].qs, 4 * g));
                            raw[t] = _mm256_add_epi16(raw[t], products);
                        }
                    }
                    for t in 0..T {
                        sums[t] = _mm256_add_epi32(sums[t], _mm256_madd_epi16(raw[t], scale));
                    }
                }
            }
            // The part's offsets (Q6_K: the 32 its stored weights carry, times the
            // activations' sums and the scales, taken off here).
            let mut offset = [zero; T];
            for p in part * pairs_per_part..(part + 1) * pairs_per_part {
                let m = load_i32(&pairs[p * ROWS..]);
                for t in 0..T {
                    let products = _mm256_madd_epi16(m, broadcast(&a[t].sums, 2 * p));
                    offset[t] = _mm256_add_epi32(offset[t], products);
                }
            }
            for t in 0..T {
                let (sum, offset) = if Q6 {
                    let carried = _mm256_slli_epi32::<5>(offset[t]);
                    (_mm256_sub_epi32(sums[t], carried), zero)
                } else {
                    (sums[t], offset[t])
                };
                let (sum, offset) = (_mm256_cvtepi32_ps(sum), _mm256_cvtepi32_ps(offset));
                let d_a = _mm256_set1_ps(a[t].d);
                if accumulation == Accumulation::Tiled {
                    // `superblocks::tiled_step`, lane by lane.
                    // (`-(dmin · offset) + x` fused is `(-dmin) · offset + x`, zeros' signs too.)
                    let block = _mm256_fnmadd_ps(dmin_w, offset, _mm256_mul_ps(d_w, sum));
                    total[t] = _mm256_fmadd_ps(block, d_a, total[t]);
                } else {
                    total[t] = _mm256_fmadd_ps(sum, _mm256_mul_ps(d_w, d_a), total[t]);
                    offsets[t] = _mm256_fmadd_ps(offset, _mm256_mul_ps(dmin_w, d_a), offsets[t]);
                }
            }
        }
    }
    std::array::from_fn(|t| {
        if accumulation == Accumulation::Tiled {
            total[t]
        } else {
            _mm256_sub_ps(total[t], offsets[t])
        }
    })
}
