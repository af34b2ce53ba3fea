//! The products of `super::panels` on AVX512-VNNI: sixteen rows per panel, one `vpdpbusd` on
//! 512-bit vectors multiplying four weights of each of the sixteen rows by the same four
//! activations of one token, broadcast: 64 products per instruction, where the row-by-row
//! kernels of `avx2_superblocks` take two or three instructions for 32.
//!
//! Unsafe code is what [`super::avx2`] allows: calling functions compiled for CPU features
//! detected at run time, and unaligned loads from slices whose lengths the indexing checks.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m512, __m512i, _mm512_add_epi32, _mm512_cvtepi32_ps, _mm512_dpbusd_epi32,
    _mm512_dpwssd_epi32, _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_loadu_ps, _mm512_loadu_si512,
    _mm512_mul_ps, _mm512_mullo_epi32, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_setzero_si512, _mm512_slli_epi32, _mm512_storeu_ps, _mm512_sub_epi32, _mm512_sub_ps,
};

use super::activation_k::SuperBlock;
use super::format::{Accumulation, Products};
use super::panels::{self, GROUPS, PAIRS, Panel, TOKENS};
use super::superblocks::SuperBlockFormat;

/// Weight rows per panel: one i32 lane each.
const ROWS: usize = 16;

/// Proof that this CPU has AVX512F/BW/VL and AVX512-VNNI besides AVX2/FMA/F16C: only
/// [`Vnni512::detect`] makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vnni512(());

impl Vnni512 {
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

    /// [`panels::Panels::dot_tile`] on sixteen-row panels.
    pub(crate) fn dot_tile(
        self,
        format: SuperBlockFormat,
        accumulation: Accumulation,
        rows: &[u8],
        row_bytes: usize,
        activations: &[SuperBlock],
        out: &mut Products<'_>,
    ) {
        // SAFETY: `self` exists only when the CPU features were detected.
        unsafe { tile(format, accumulation, rows, row_bytes, activations, out) }
    }
}

/// [`Vnni512::dot_tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile(
    format: SuperBlockFormat,
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    activations: &[SuperBlock],
    out: &mut Products<'_>,
) {
    let parts = panels::parts(format, accumulation);
    let lanes = |sums: __m512| {
        let mut lanes = [0.0f32; ROWS];
        // SAFETY: `lanes` is 16 writable f32.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sums) };
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

/// The panel with `T` tokens in `format`: Q6_K's sub-blocks are 16 weights (four groups),
/// the others' 32 (eight).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn dot<const T: usize>(
    format: SuperBlockFormat,
    accumulation: Accumulation,
    parts: usize,
    panel: &Panel<ROWS>,
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
    panel: &Panel<ROWS>,
    tokens: [&[SuperBlock]; T],
) -> [__m512; T] {
    let subs = GROUPS / GROUPS_PER_SUB;
    let (subs_per_part, pairs_per_part) = (subs / parts, PAIRS / parts);
    let zero = _mm512_setzero_si512();
    let mut total = [_mm512_setzero_ps(); T];
    let mut offsets = [_mm512_setzero_ps(); T];
    for (b, (weights, scales, pairs, d_w, dmin_w)) in panel.blocks().enumerate() {
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

    #[test]
    fn panels_and_portable_agree_bit_for_bit() {
        let Some(vnni) = Vnni512::detect() else {
            eprintln!("SKIPPED: this CPU has no AVX512-VNNI");
            return;
        };
        panels::tests::agree_with_portable_bit_for_bit(panels::Panels::Vnni512(vnni));
    }
}
