//! The AVX2/FMA dot products of the 32-weight formats: the same operations as
//! [`super::blocks::dot_row`] (and as ggml's `ggml_vec_dot_q4_0_q8_0`, `…_q4_1_q8_1`,
//! `…_q5_0_q8_0`, `…_q5_1_q8_1`, `…_q8_0_q8_0` on AVX2), 32 weights per step, one row at a
//! time as ggml does (interleaving four rows to overlap their accumulation chains measured no
//! faster on the default model). The k-quants' are in `avx2_superblocks.rs`.
//!
//! The only unsafe code of the crate lives here and there: calling functions compiled for CPU
//! features (checked at run time by [`Avx2::detect`]) and unaligned loads from block bytes
//! whose lengths the safe wrappers check.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256, __m256i, _mm_add_ps, _mm_add_ss, _mm_cvtph_ps, _mm_cvtsi32_si128, _mm_cvtss_f32,
    _mm_loadu_si128, _mm_movehdup_ps, _mm_movehl_ps, _mm_srli_epi16, _mm256_and_si256,
    _mm256_andnot_si256, _mm256_castps256_ps128, _mm256_cmpeq_epi8, _mm256_cvtepi32_ps,
    _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_si256, _mm256_madd_epi16,
    _mm256_maddubs_epi16, _mm256_or_si256, _mm256_set_epi64x, _mm256_set_m128i, _mm256_set1_epi8,
    _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi64x, _mm256_set1_ps, _mm256_setzero_ps,
    _mm256_shuffle_epi8, _mm256_sign_epi8, _mm256_sub_epi8,
};

use super::activation::ActivationBlock;
use super::blocks::BlockFormat;
use super::format::Accumulation;

/// Proof that this CPU has what the kernels use (AVX2 integer SIMD, FMA, F16C conversions):
/// only [`Avx2::detect`] makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2(());

impl Avx2 {
    pub(crate) fn detect() -> Option<Self> {
        let available = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        available.then_some(Self(()))
    }

    /// One result per row of `row_bytes` bytes in `rows` (whole rows only), like
    /// [`super::blocks::dot_rows`], with the same result bit for bit.
    pub(crate) fn dot_rows(
        self,
        format: BlockFormat,
        accumulation: Accumulation,
        rows: &[u8],
        row_bytes: usize,
        activations: &[ActivationBlock],
        out: &mut [f32],
    ) {
        let blocks = (row_bytes / format.block_bytes()).min(activations.len());
        // SAFETY: `self` exists only when the CPU features were detected; every row of
        // `chunks_exact(row_bytes)` holds `row_bytes >= blocks * block_bytes` bytes and
        // `activations` at least `blocks` blocks, which is all the kernels read.
        unsafe {
            match format {
                BlockFormat::Q4_0 => {
                    rows_q4_0(accumulation, rows, row_bytes, blocks, activations, out)
                }
                BlockFormat::Q4_1 => {
                    rows_q4_1(accumulation, rows, row_bytes, blocks, activations, out)
                }
                BlockFormat::Q5_0 => {
                    rows_q5_0(accumulation, rows, row_bytes, blocks, activations, out)
                }
                BlockFormat::Q5_1 => {
                    rows_q5_1(accumulation, rows, row_bytes, blocks, activations, out)
                }
                BlockFormat::Q8_0 => {
                    rows_q8_0(accumulation, rows, row_bytes, blocks, activations, out)
                }
            }
        }
    }
}

const Q4_1: u8 = 0;
const Q5_0: u8 = 1;
const Q5_1: u8 = 2;
const Q8_0: u8 = 3;
const Q4_0: u8 = 4;

/// [`dot_row`] over whole rows, compiled per format with the CPU features.
///
/// Safety: as [`dot_row`], for every row of `rows.chunks_exact(row_bytes)`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_of<const FORMAT: u8>(
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    blocks: usize,
    activations: &[ActivationBlock],
    out: &mut [f32],
) {
    for (row, y) in rows.chunks_exact(row_bytes).zip(out.iter_mut()) {
        // SAFETY: forwarded from the caller's contract.
        *y = unsafe { dot_row::<FORMAT>(accumulation, row, blocks, activations) };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q4_0(
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    blocks: usize,
    activations: &[ActivationBlock],
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { rows_of::<Q4_0>(accumulation, rows, row_bytes, blocks, activations, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q4_1(
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    blocks: usize,
    activations: &[ActivationBlock],
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { rows_of::<Q4_1>(accumulation, rows, row_bytes, blocks, activations, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q5_0(
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    blocks: usize,
    activations: &[ActivationBlock],
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { rows_of::<Q5_0>(accumulation, rows, row_bytes, blocks, activations, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q5_1(
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    blocks: usize,
    activations: &[ActivationBlock],
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { rows_of::<Q5_1>(accumulation, rows, row_bytes, blocks, activations, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q8_0(
    accumulation: Accumulation,
    rows: &[u8],
    row_bytes: usize,
    blocks: usize,
    activations: &[ActivationBlock],
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { rows_of::<Q8_0>(accumulation, rows, row_bytes, blocks, activations, out) }
}

/// The dot product of the row at `row` (`blocks` blocks) with the activations.
///
/// Safety: the CPU has AVX2, FMA and F16C; `row.len() >= blocks * block_bytes` and
/// `activations.len() >= blocks`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_row<const FORMAT: u8>(
    accumulation: Accumulation,
    row: &[u8],
    blocks: usize,
    activations: &[ActivationBlock],
) -> f32 {
    let format = match FORMAT {
        Q4_1 => BlockFormat::Q4_1,
        Q5_0 => BlockFormat::Q5_0,
        Q5_1 => BlockFormat::Q5_1,
        Q4_0 => BlockFormat::Q4_0,
        _ => BlockFormat::Q8_0,
    };
    let mut acc = _mm256_setzero_ps();
    let mut total = 0.0f32;
    let mut offsets = 0.0f32;
    let mut block = row.as_ptr();
    for a in &activations[..blocks] {
        // SAFETY: an `ActivationBlock` starts with its 32 bytes of `qs`; `block` points at one
        // of the row's first `blocks` blocks (the contract), so `weighted_sums` reads inside
        // it, and after the last block the pointer is one past them and never read.
        let (xy, d, m) = unsafe {
            let qy = _mm256_loadu_si256(a.qs.as_ptr().cast());
            let sums = weighted_sums::<FORMAT>(block, qy);
            block = block.add(format.block_bytes());
            sums
        };
        match accumulation {
            Accumulation::Lanes => acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), xy, acc),
            // The lanes hold integers below 2^17: their f32 sum is the exact integer sum.
            Accumulation::Rows => total = sum_lanes(xy).mul_add(d * a.d, total),
        }
        if format.has_min() {
            offsets = m.mul_add(a.s, offsets);
        }
    }
    let products = match accumulation {
        Accumulation::Lanes => sum_lanes(acc),
        Accumulation::Rows => total,
    };
    if format.has_min() {
        products + offsets
    } else {
        products
    }
}

/// For the block at `block`: the eight lane sums of four weight×activation products (as f32),
/// the block's scale `d` and its offset `m` (meaningless for Q4_0, Q5_0 and Q8_0).
///
/// Safety: AVX2/FMA/F16C available; `block` points at one whole block of `FORMAT`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn weighted_sums<const FORMAT: u8>(block: *const u8, qy: __m256i) -> (__m256, f32, f32) {
    // SAFETY: every block is at least 18 bytes; the offsets read below are inside it.
    unsafe {
        // d and the next f16 (m, or high bits or nibbles for Q5_0 and Q4_0) converted at once.
        let scales = _mm_cvtph_ps(_mm_cvtsi32_si128(block.cast::<i32>().read_unaligned()));
        let d = _mm_cvtss_f32(scales);
        let m = _mm_cvtss_f32(_mm_movehdup_ps(scales));
        let xy = match FORMAT {
            Q4_0 => {
                // Weights q - 8, signed: |x| * sign(y, x) keeps maddubs' unsigned×signed form.
                let qx = _mm256_sub_epi8(nibbles(block.add(2)), _mm256_set1_epi8(8));
                unsigned_products(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx))
            }
            Q4_1 => unsigned_products(nibbles(block.add(4)), qy),
            Q5_0 => {
                // Weights q - 16: a clear fifth bit makes the byte negative (0xF0 | nibble).
                let high = _mm256_andnot_si256(bits(block.add(2)), _mm256_set1_epi8(0xF0_u8 as i8));
                let qx = _mm256_or_si256(nibbles(block.add(6)), high);
                // |x| * sign(y, x) keeps maddubs' unsigned×signed form.
                unsigned_products(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx))
            }
            Q5_1 => {
                let high = _mm256_and_si256(bits(block.add(4)), _mm256_set1_epi8(0x10));
                unsigned_products(_mm256_or_si256(nibbles(block.add(8)), high), qy)
            }
            _ => {
                let qx = _mm256_loadu_si256(block.add(2).cast());
                unsigned_products(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx))
            }
        };
        (xy, d, m)
    }
}

/// 16 bytes of nibbles → 32 bytes: low nibbles (weights 0..16), then high ones (16..32).
///
/// Safety: AVX2 available; 16 readable bytes at `at`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibbles(at: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes.
    let packed = unsafe { _mm_loadu_si128(at.cast()) };
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
        _mm256_set1_epi8(0x0F),
    )
}

/// 32 bits → 32 bytes, 0xFF where the bit is set.
///
/// Safety: AVX2 available; 4 readable bytes at `at`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn bits(at: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes.
    let word = unsafe { at.cast::<i32>().read_unaligned() };
    // Byte i of the result takes the source byte holding bit i...
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(word),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    // ...and is all ones once every other bit is forced on.
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1))
}

/// Unsigned `x` times signed `y`, summed over each four consecutive bytes, as f32. No pair sum
/// reaches the i16 saturation of maddubs: |x| <= 128 and |y| <= 127 give at most 32,512.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn unsigned_products(x: __m256i, y: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(x, y);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// ggml's `hsum_float_8` (see [`super::blocks::sum_lanes`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn sum_lanes(x: __m256) -> f32 {
    let quad = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
}
