//! The AVX2/FMA dot products of the 32-weight formats: the same operations as
//! [`super::blocks::dot_row`] (and as ggml's `ggml_vec_dot_q4_0_q8_0`, `…_q4_1_q8_1`,
//! `…_q5_0_q8_0`, `…_q5_1_q8_1`, `…_q8_0_q8_0` on AVX2), 32 weights per step. A batch of
//! tokens (prefill) is multiplied in groups of four weight rows × two tokens (four tokens where
//! AVX-512 gives 32 vector registers): each weight block is unpacked once for the group's
//! tokens and each activation block loaded once for the four rows,
//! while every product keeps its own accumulators and order, so batching does not change a
//! single bit of the results (llama.cpp's prefill runs the same per-product operations). On a
//! CPU with AVX-VNNI or AVX512-VNNI the four-product integer sums take one `vpdpbusd` instead
//! of `vpmaddubsw` + `vpmaddwd` (exact integers either way, as in ggml's VNNI builds): ~8%
//! faster prefill on the default model with AVX-VNNI. The k-quants' are in `avx2_superblocks.rs`.
//!
//! The only unsafe code of the crate lives here and there: calling functions compiled for CPU
//! features (checked at run time by [`Avx2::detect`]) and unaligned loads from block bytes
//! whose lengths the safe wrappers check.

#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256, __m256i, _mm_add_ps, _mm_add_ss, _mm_cvtph_ps, _mm_cvtsi32_si128, _mm_cvtss_f32,
    _mm_loadu_si128, _mm_movehdup_ps, _mm_movehl_ps, _mm_setr_epi32, _mm_srli_epi16,
    _mm256_add_epi32, _mm256_and_si256, _mm256_castps256_ps128, _mm256_cmpeq_epi8,
    _mm256_cvtepi32_ps, _mm256_cvtph_ps, _mm256_dpbusd_avx_epi32, _mm256_dpbusd_epi32,
    _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_si256, _mm256_madd_epi16,
    _mm256_maddubs_epi16, _mm256_movehdup_ps, _mm256_moveldup_ps, _mm256_mul_ps, _mm256_or_si256,
    _mm256_permutevar8x32_ps, _mm256_set_epi64x, _mm256_set_m128i, _mm256_set1_epi8,
    _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi64x, _mm256_set1_ps, _mm256_setr_epi32,
    _mm256_setr_ps, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_sign_epi8,
    _mm256_slli_epi32, _mm256_storeu_ps, _mm256_storeu_si256, _mm256_sub_epi32,
};

use super::activation::ActivationBlock;
use super::blocks::BlockFormat;
use super::format::{Accumulation, Products};

/// Proof that this CPU has what the kernels use (AVX2 integer SIMD, FMA, F16C conversions):
/// only [`Avx2::detect`] makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2 {
    /// How the four-product integer sums are taken: [`PLAIN`], [`AVX_VNNI`] or
    /// [`AVX512_VNNI`].
    vnni: u8,
}

/// `vpmaddubsw` + `vpmaddwd`: every AVX2 CPU.
const PLAIN: u8 = 0;
/// One VEX-encoded `vpdpbusd` (AVX-VNNI: Intel from Alder Lake, AMD from Zen 5).
const AVX_VNNI: u8 = 1;
/// One EVEX-encoded `vpdpbusd` on 256-bit vectors (AVX512-VNNI with AVX512VL: Intel server
/// parts from Cascade Lake, AMD Zen 4). These kernels are compiled with AVX-512 enabled, which
/// also gives the compiler 32 vector registers: the 4 × 2 group's accumulators no longer
/// spill to the stack.
const AVX512_VNNI: u8 = 2;

impl Avx2 {
    pub(crate) fn detect() -> Option<Self> {
        let available = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let vnni = if is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bw")
        {
            AVX512_VNNI
        } else if is_x86_feature_detected!("avxvnni") {
            AVX_VNNI
        } else {
            PLAIN
        };
        available.then_some(Self { vnni })
    }

    /// This CPU's kernels and every simpler kind it can also run (tests run them all).
    #[cfg(test)]
    pub(crate) fn variants(self) -> impl Iterator<Item = Self> {
        let avx_vnni = is_x86_feature_detected!("avxvnni");
        (PLAIN..=self.vnni)
            .filter(move |&vnni| vnni != AVX_VNNI || avx_vnni)
            .map(|vnni| Self { vnni })
    }

    /// The product of every whole row of `row_bytes` bytes in `rows` with every token of
    /// `activations` (the tokens one after another, `row_bytes / block_bytes` blocks each),
    /// like [`super::blocks::dot_tile`] and with the same results bit for bit.
    pub(crate) fn dot_tile(
        self,
        format: BlockFormat,
        accumulation: Accumulation,
        rows: &[u8],
        row_bytes: usize,
        activations: &[ActivationBlock],
        out: &mut Products<'_>,
    ) {
        let tile = Tile {
            vnni: self.vnni,
            accumulation,
            rows,
            row_bytes,
            blocks: row_bytes / format.block_bytes(),
            activations,
        };
        // SAFETY: `self` exists only when the CPU features were detected; `tile_of` reads the
        // weights and activations only through slices it cut to whole blocks.
        unsafe {
            match format {
                BlockFormat::Q4_0 => tile_of::<Q4_0>(&tile, out),
                BlockFormat::Q4_1 => tile_of::<Q4_1>(&tile, out),
                BlockFormat::Q5_0 => tile_of::<Q5_0>(&tile, out),
                BlockFormat::Q5_1 => tile_of::<Q5_1>(&tile, out),
                BlockFormat::Q8_0 => tile_of::<Q8_0>(&tile, out),
            }
        }
    }

    /// [`Avx2::dot_tile`] with one token: one result per row.
    #[cfg(test)]
    pub(crate) fn dot_rows(
        self,
        format: BlockFormat,
        accumulation: Accumulation,
        rows: &[u8],
        row_bytes: usize,
        activations: &[ActivationBlock],
        out: &mut [f32],
    ) {
        let stride = out.len();
        let out = &mut Products {
            values: out,
            stride,
        };
        self.dot_tile(format, accumulation, rows, row_bytes, activations, out);
    }
}

const Q4_1: u8 = 0;
const Q5_0: u8 = 1;
const Q5_1: u8 = 2;
const Q8_0: u8 = 3;
const Q4_0: u8 = 4;
/// Q5_0 widened for a batch ([`widen_q5_0`]): the f16 scale, then each unsigned 5-bit
/// weight (`q + 16`) in a byte of its own, in Q8_0's 34-byte layout.
const Q5_0_WIDE: u8 = 5;

const fn format_of(format: u8) -> BlockFormat {
    match format {
        Q5_0_WIDE => BlockFormat::Q8_0,
        Q4_1 => BlockFormat::Q4_1,
        Q5_0 => BlockFormat::Q5_0,
        Q5_1 => BlockFormat::Q5_1,
        Q4_0 => BlockFormat::Q4_0,
        _ => BlockFormat::Q8_0,
    }
}

/// The operands of [`Avx2::dot_tile`].
struct Tile<'a> {
    vnni: u8,
    accumulation: Accumulation,
    rows: &'a [u8],
    row_bytes: usize,
    /// Blocks per row and per token.
    blocks: usize,
    activations: &'a [ActivationBlock],
}

/// Weight rows per group of the register-blocked kernel: each weight block unpacked once
/// meets [`TOKENS`] tokens.
const ROWS: usize = 4;
/// Tokens per group: each activation block loaded once meets [`ROWS`] weight rows.
const TOKENS: usize = 2;
/// Tokens per group where the kernels have 32 vector registers ([`AVX512_VNNI`]).
const WIDE_TOKENS: usize = 4;

/// [`Avx2::dot_tile`] for one format, in either order, with AVX-VNNI when the CPU has it.
///
/// Safety: the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_of<const FORMAT: u8>(tile: &Tile<'_>, out: &mut Products<'_>) {
    // SAFETY: forwarded from the caller's contract; `tile.vnni` comes from detection.
    unsafe {
        match (tile.accumulation, tile.vnni) {
            (Accumulation::Lanes | Accumulation::Tiled, AVX512_VNNI) => {
                tile_avx512::<FORMAT, true>(tile, out)
            }
            (Accumulation::Rows | Accumulation::RowsBatched, AVX512_VNNI) => {
                tile_avx512::<FORMAT, false>(tile, out)
            }
            (Accumulation::Lanes | Accumulation::Tiled, AVX_VNNI) => {
                tile_vnni::<FORMAT, true>(tile, out)
            }
            (Accumulation::Rows | Accumulation::RowsBatched, AVX_VNNI) => {
                tile_vnni::<FORMAT, false>(tile, out)
            }
            (Accumulation::Lanes | Accumulation::Tiled, _) => tile_avx2::<FORMAT, true>(tile, out),
            (Accumulation::Rows | Accumulation::RowsBatched, _) => {
                tile_avx2::<FORMAT, false>(tile, out)
            }
        }
    }
}

/// [`tile_body`] compiled for AVX2.
///
/// Safety: the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const FORMAT: u8, const LANES: bool>(tile: &Tile<'_>, out: &mut Products<'_>) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { tile_body::<FORMAT, LANES, PLAIN>(tile, out) }
}

/// [`tile_body`] compiled for AVX2 with AVX-VNNI.
///
/// Safety: the CPU has AVX2, FMA, F16C and AVX-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn tile_vnni<const FORMAT: u8, const LANES: bool>(tile: &Tile<'_>, out: &mut Products<'_>) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { tile_body::<FORMAT, LANES, AVX_VNNI>(tile, out) }
}

/// [`tile_body`] compiled for AVX2 with AVX512-VNNI and AVX512VL.
///
/// Safety: the CPU has AVX2, FMA, F16C, AVX512F, AVX512VL, AVX512BW and AVX512-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn tile_avx512<const FORMAT: u8, const LANES: bool>(
    tile: &Tile<'_>,
    out: &mut Products<'_>,
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { tile_body::<FORMAT, LANES, AVX512_VNNI>(tile, out) }
}

/// [`Avx2::dot_tile`] for one format and order (`LANES`: [`Accumulation::Lanes`]): groups of
/// [`ROWS`] weight rows × [`TOKENS`] tokens, and smaller groups for the remainders (one token
/// alone, as in decoding, goes row by row). Every product keeps its own accumulators, so
/// grouping changes which loads are shared, not the float operations of any one product.
///
/// This and the functions it calls are always inlined into [`tile_avx2`] or [`tile_vnni`],
/// whose CPU features they take (a function cannot be generic over its features); `VNNI`
/// picks the four-product sums (see [`products`]).
///
/// Safety: the CPU has AVX2, FMA and F16C, and AVX-VNNI if `VNNI`.
#[inline(always)]
unsafe fn tile_body<const FORMAT: u8, const LANES: bool, const VNNI: u8>(
    tile: &Tile<'_>,
    out: &mut Products<'_>,
) {
    let (blocks, row_bytes) = (tile.blocks, tile.row_bytes);
    if blocks == 0 || row_bytes == 0 {
        return;
    }
    let block_bytes = format_of(FORMAT).block_bytes();
    // Slicing checks that each row and token holds `blocks` whole blocks; the kernels then
    // read them through raw pointers.
    let row = |r: usize| tile.rows[r * row_bytes..][..blocks * block_bytes].as_ptr();
    let token = |t: usize| tile.activations[t * blocks..][..blocks].as_ptr();
    let row_count = tile.rows.len() / row_bytes;
    let tokens = tile.activations.len() / blocks;
    let mut r = 0;
    // SAFETY (every call below): the CPU features are the caller's contract; the pointers
    // come from the checked slices above (and the widened copy, sized for one group).
    unsafe {
        if FORMAT == Q5_0 && tokens >= WIDEN_MIN_TOKENS {
            // Q5_0's weights take the most work to unpack; in a batch each row group meets
            // many tokens, so its weights are unpacked once into bytes instead of once per
            // token group. The integer sums, and so every result, stay the same.
            let wide_bytes = format_of(Q5_0_WIDE).block_bytes();
            let mut wide = vec![0u8; ROWS * blocks * wide_bytes];
            while r + ROWS <= row_count {
                for (i, chunk) in wide.chunks_exact_mut(blocks * wide_bytes).enumerate() {
                    widen_q5_0(row(r + i), blocks, chunk);
                }
                let group = std::array::from_fn(|i| wide[i * blocks * wide_bytes..].as_ptr());
                group_over_tokens::<Q5_0_WIDE, LANES, VNNI>(blocks, group, &token, tokens, out, r);
                r += ROWS;
            }
        } else if tokens >= TOKENS {
            // (One token alone goes row by row: four rows × one token through `dot_group`
            // decoded at half the speed on a Zen 4.)
            while r + ROWS <= row_count {
                let group = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                group_over_tokens::<FORMAT, LANES, VNNI>(blocks, group, &token, tokens, out, r);
                r += ROWS;
            }
        }
        while r < row_count {
            for t in 0..tokens {
                let sums = dot_group::<FORMAT, LANES, VNNI, 1, 1>(blocks, [row(r)], [token(t)]);
                store(out, r, t, sums);
            }
            r += 1;
        }
    }
}

/// Batches of at least this many tokens widen Q5_0's weights before multiplying: two token
/// groups already share each unpacked block.
const WIDEN_MIN_TOKENS: usize = 2 * TOKENS;

/// The products of the [`ROWS`] weight rows `group` (starting at row `r`) with every token:
/// groups of [`TOKENS`] (or [`WIDE_TOKENS`]) tokens, then the one left over.
///
/// Safety: as [`dot_group`]; `token(t)` points at token `t`'s `blocks` activation blocks.
#[inline(always)]
unsafe fn group_over_tokens<const FORMAT: u8, const LANES: bool, const VNNI: u8>(
    blocks: usize,
    group: [*const u8; ROWS],
    token: &impl Fn(usize) -> *const ActivationBlock,
    tokens: usize,
    out: &mut Products<'_>,
    r: usize,
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        let mut t = 0;
        // With AVX-512's 32 registers, four tokens' sixteen accumulators fit.
        while VNNI == AVX512_VNNI && t + WIDE_TOKENS <= tokens {
            let four = [token(t), token(t + 1), token(t + 2), token(t + 3)];
            let sums = dot_4x4::<FORMAT, LANES, VNNI>(blocks, group, four);
            store(out, r, t, sums);
            t += WIDE_TOKENS;
        }
        while t + TOKENS <= tokens {
            let pair = [token(t), token(t + 1)];
            let sums = dot_4x2::<FORMAT, LANES, VNNI>(blocks, group, pair);
            store(out, r, t, sums);
            t += TOKENS;
        }
        if t < tokens {
            let sums = dot_group::<FORMAT, LANES, VNNI, ROWS, 1>(blocks, group, [token(t)]);
            store(out, r, t, sums);
        }
    }
}

/// One row of `blocks` Q5_0 blocks rewritten as [`Q5_0_WIDE`] blocks in `wide`: the scale,
/// then the 32 unsigned 5-bit weights one per byte.
///
/// Safety: as [`weights`]; `row` points at `blocks` whole Q5_0 blocks.
#[inline(always)]
unsafe fn widen_q5_0(row: *const u8, blocks: usize, wide: &mut [u8]) {
    let (narrow_bytes, wide_bytes) = (
        format_of(Q5_0).block_bytes(),
        format_of(Q5_0_WIDE).block_bytes(),
    );
    for (b, block) in wide.chunks_exact_mut(wide_bytes).take(blocks).enumerate() {
        // SAFETY: block `b` of the row is whole (the caller's contract); `block` holds
        // `wide_bytes` = 2 + 32 bytes.
        unsafe {
            let narrow = row.add(b * narrow_bytes);
            std::ptr::copy_nonoverlapping(narrow, block.as_mut_ptr(), 2);
            let values = weights::<Q5_0>(narrow).magnitudes;
            _mm256_storeu_si256(block.as_mut_ptr().add(2).cast(), values);
        }
    }
}

#[inline(always)]
fn store<const R: usize, const T: usize>(
    out: &mut Products<'_>,
    row: usize,
    token: usize,
    sums: [[f32; T]; R],
) {
    for (r, row_sums) in sums.iter().enumerate() {
        for (t, &sum) in row_sums.iter().enumerate() {
            out.set(row + r, token + t, sum);
        }
    }
}

/// The dot products of `R` weight rows with `T` tokens, each in the operations of ggml's
/// `ggml_vec_dot_*` (`LANES`) or of its repacked kernel ([`Accumulation::Rows`]): see the
/// module docs of [`super::blocks`].
///
/// Safety: the CPU features of [`tile_body`]; every row pointer points at `blocks` whole
/// blocks of `FORMAT` and every token pointer at `blocks` activation blocks.
#[inline(always)]
unsafe fn dot_group<
    const FORMAT: u8,
    const LANES: bool,
    const VNNI: u8,
    const R: usize,
    const T: usize,
>(
    blocks: usize,
    rows: [*const u8; R],
    tokens: [*const ActivationBlock; T],
) -> [[f32; T]; R] {
    // SAFETY: the intrinsics need only the caller's CPU features; the reads stay inside the
    // blocks the contract names (an `ActivationBlock` starts with its 32 bytes of `qs`).
    unsafe {
        let format = format_of(FORMAT);
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut total = [[0.0f32; T]; R];
        let mut offsets = [[0.0f32; T]; R];
        for b in 0..blocks {
            let mut a: [&ActivationBlock; T] = [&ZERO_BLOCK; T];
            let mut qy = [_mm256_setzero_si256(); T];
            let mut offset = [_mm256_setzero_si256(); T];
            for t in 0..T {
                a[t] = &*tokens[t].add(b);
                qy[t] = _mm256_loadu_si256(a[t].qs.as_ptr().cast());
                offset[t] = activation_offset::<FORMAT, VNNI>(qy[t]);
            }
            for r in 0..R {
                let (x, d, m) = unpack::<FORMAT>(rows[r].add(b * format.block_bytes()));
                for t in 0..T {
                    let xy = products::<FORMAT, VNNI>(x, qy[t], offset[t]);
                    if LANES {
                        acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t].d), xy, acc[r][t]);
                    } else {
                        // The lanes hold integers below 2^17: their f32 sum is the exact
                        // integer sum.
                        total[r][t] = sum_lanes(xy).mul_add(d * a[t].d, total[r][t]);
                    }
                    if format.has_min() {
                        offsets[r][t] = m.mul_add(a[t].s, offsets[r][t]);
                    }
                }
            }
        }
        let mut sums = [[0.0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                let products = if LANES {
                    sum_lanes(acc[r][t])
                } else {
                    total[r][t]
                };
                sums[r][t] = if format.has_min() {
                    products + offsets[r][t]
                } else {
                    products
                };
            }
        }
        sums
    }
}

/// [`dot_group`] for [`ROWS`] × [`TOKENS`] = 4 × 2, with the per-block scalar work done for
/// the eight products at once: the four rows' `d` (and `m`) converted in one instruction,
/// the eight `d_w * d_a` in one multiplication, and the eight `m * s` offset terms of Q4_1
/// and Q5_1 in one fused multiply-add. Each lane performs the scalar operation of
/// [`dot_group`] on the same values, so the results are the same bit for bit.
///
/// Safety: as [`dot_group`].
#[inline(always)]
unsafe fn dot_4x2<const FORMAT: u8, const LANES: bool, const VNNI: u8>(
    blocks: usize,
    rows: [*const u8; ROWS],
    tokens: [*const ActivationBlock; TOKENS],
) -> [[f32; TOKENS]; ROWS] {
    // SAFETY: the intrinsics need only the caller's CPU features; the reads stay inside the
    // blocks the contract names (an `ActivationBlock` starts with its 32 bytes of `qs`, every
    // weight block with an f16 scale and at least two more bytes).
    unsafe {
        let format = format_of(FORMAT);
        let mut acc = [[_mm256_setzero_ps(); TOKENS]; ROWS];
        let mut total = [[0.0f32; TOKENS]; ROWS];
        let mut offsets = _mm256_setzero_ps();
        for b in 0..blocks {
            let a = [&*tokens[0].add(b), &*tokens[1].add(b)];
            let qy = [
                _mm256_loadu_si256(a[0].qs.as_ptr().cast()),
                _mm256_loadu_si256(a[1].qs.as_ptr().cast()),
            ];
            let offset = [
                activation_offset::<FORMAT, VNNI>(qy[0]),
                activation_offset::<FORMAT, VNNI>(qy[1]),
            ];
            let block: [*const u8; ROWS] =
                std::array::from_fn(|r| rows[r].add(b * format.block_bytes()));
            let header = |r: usize| block[r].cast::<i32>().read_unaligned();
            // d0 m0 d1 m1 d2 m2 d3 m3 (m meaningless for the formats without an offset).
            let headers =
                _mm256_cvtph_ps(_mm_setr_epi32(header(0), header(1), header(2), header(3)));
            // Lane 2r + t: row r with token t.
            let token_d = _mm256_setr_ps(
                a[0].d, a[1].d, a[0].d, a[1].d, a[0].d, a[1].d, a[0].d, a[1].d,
            );
            let mut scales = [0.0f32; ROWS * TOKENS];
            _mm256_storeu_ps(
                scales.as_mut_ptr(),
                _mm256_mul_ps(_mm256_moveldup_ps(headers), token_d),
            );
            if format.has_min() {
                let token_s = _mm256_setr_ps(
                    a[0].s, a[1].s, a[0].s, a[1].s, a[0].s, a[1].s, a[0].s, a[1].s,
                );
                offsets = _mm256_fmadd_ps(_mm256_movehdup_ps(headers), token_s, offsets);
            }
            for r in 0..ROWS {
                let x = weights::<FORMAT>(block[r]);
                for t in 0..TOKENS {
                    let xy = products::<FORMAT, VNNI>(x, qy[t], offset[t]);
                    let scale = scales[TOKENS * r + t];
                    if LANES {
                        acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(scale), xy, acc[r][t]);
                    } else {
                        total[r][t] = sum_lanes(xy).mul_add(scale, total[r][t]);
                    }
                }
            }
        }
        let mut offset = [0.0f32; ROWS * TOKENS];
        _mm256_storeu_ps(offset.as_mut_ptr(), offsets);
        let mut sums = [[0.0f32; TOKENS]; ROWS];
        for r in 0..ROWS {
            for t in 0..TOKENS {
                let products = if LANES {
                    sum_lanes(acc[r][t])
                } else {
                    total[r][t]
                };
                sums[r][t] = if format.has_min() {
                    products + offset[TOKENS * r + t]
                } else {
                    products
                };
            }
        }
        sums
    }
}

/// [`dot_4x2`] for four tokens ([`WIDE_TOKENS`]), where 32 vector registers hold the sixteen
/// accumulators: each weight block unpacked once meets four tokens. Lane `4 (r % 2) + t` of a
/// pair of vectors holds row `r` with token `t`; each lane performs [`dot_group`]'s scalar
/// operation on the same values, so the results are the same bit for bit.
///
/// Safety: as [`dot_group`].
#[inline(always)]
unsafe fn dot_4x4<const FORMAT: u8, const LANES: bool, const VNNI: u8>(
    blocks: usize,
    rows: [*const u8; ROWS],
    tokens: [*const ActivationBlock; WIDE_TOKENS],
) -> [[f32; WIDE_TOKENS]; ROWS] {
    // SAFETY: as in `dot_4x2`.
    unsafe {
        let format = format_of(FORMAT);
        let mut acc = [[_mm256_setzero_ps(); WIDE_TOKENS]; ROWS];
        let mut total = [[0.0f32; WIDE_TOKENS]; ROWS];
        // Rows 0 and 1, then rows 2 and 3.
        let mut offsets = [_mm256_setzero_ps(); 2];
        let pick = |a: i32, b: i32| _mm256_setr_epi32(a, a, a, a, b, b, b, b);
        for b in 0..blocks {
            let a: [&ActivationBlock; WIDE_TOKENS] = std::array::from_fn(|t| &*tokens[t].add(b));
            let qy: [__m256i; WIDE_TOKENS] =
                std::array::from_fn(|t| _mm256_loadu_si256(a[t].qs.as_ptr().cast()));
            let offset: [__m256i; WIDE_TOKENS] =
                std::array::from_fn(|t| activation_offset::<FORMAT, VNNI>(qy[t]));
            let block: [*const u8; ROWS] =
                std::array::from_fn(|r| rows[r].add(b * format.block_bytes()));
            let header = |r: usize| block[r].cast::<i32>().read_unaligned();
            // d0 m0 d1 m1 d2 m2 d3 m3 (m meaningless for the formats without an offset).
            let headers =
                _mm256_cvtph_ps(_mm_setr_epi32(header(0), header(1), header(2), header(3)));
            let token_d = _mm256_setr_ps(
                a[0].d, a[1].d, a[2].d, a[3].d, a[0].d, a[1].d, a[2].d, a[3].d,
            );
            let mut scales = [0.0f32; ROWS * WIDE_TOKENS];
            for (half, lanes) in [(0, pick(0, 2)), (1, pick(4, 6))] {
                let d = _mm256_permutevar8x32_ps(headers, lanes);
                _mm256_storeu_ps(scales.as_mut_ptr().add(8 * half), _mm256_mul_ps(d, token_d));
            }
            if format.has_min() {
                let token_s = _mm256_setr_ps(
                    a[0].s, a[1].s, a[2].s, a[3].s, a[0].s, a[1].s, a[2].s, a[3].s,
                );
                for (half, lanes) in [(0, pick(1, 3)), (1, pick(5, 7))] {
                    let m = _mm256_permutevar8x32_ps(headers, lanes);
                    offsets[half] = _mm256_fmadd_ps(m, token_s, offsets[half]);
                }
            }
            for r in 0..ROWS {
                let x = weights::<FORMAT>(block[r]);
                for t in 0..WIDE_TOKENS {
                    let xy = products::<FORMAT, VNNI>(x, qy[t], offset[t]);
                    let scale = scales[WIDE_TOKENS * r + t];
                    if LANES {
                        acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(scale), xy, acc[r][t]);
                    } else {
                        total[r][t] = sum_lanes(xy).mul_add(scale, total[r][t]);
                    }
                }
            }
        }
        let mut offset = [0.0f32; ROWS * WIDE_TOKENS];
        _mm256_storeu_ps(offset.as_mut_ptr(), offsets[0]);
        _mm256_storeu_ps(offset.as_mut_ptr().add(8), offsets[1]);
        let mut sums = [[0.0f32; WIDE_TOKENS]; ROWS];
        for r in 0..ROWS {
            for t in 0..WIDE_TOKENS {
                let products = if LANES {
                    sum_lanes(acc[r][t])
                } else {
                    total[r][t]
                };
                sums[r][t] = if format.has_min() {
                    products + offset[WIDE_TOKENS * r + t]
                } else {
                    products
                };
            }
        }
        sums
    }
}

/// A placeholder for [`dot_group`]'s per-block references before they are set.
static ZERO_BLOCK: ActivationBlock = ActivationBlock {
    qs: [0; 32],
    d: 0.0,
    s: 0.0,
};

/// The weights of the block at `block` ready for [`products`], its scale `d` and its offset
/// `m` (meaningless for Q4_0, Q5_0 and Q8_0).
///
/// Safety: AVX2/FMA/F16C available; `block` points at one whole block of `FORMAT`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn unpack<const FORMAT: u8>(block: *const u8) -> (Weights, f32, f32) {
    // SAFETY: every block is at least 18 bytes; the offsets read below are inside it.
    unsafe {
        // d and the next f16 (m, or high bits or nibbles for Q5_0 and Q4_0) converted at once.
        let scales = _mm_cvtph_ps(_mm_cvtsi32_si128(block.cast::<i32>().read_unaligned()));
        let d = _mm_cvtss_f32(scales);
        let m = _mm_cvtss_f32(_mm_movehdup_ps(scales));
        (weights::<FORMAT>(block), d, m)
    }
}

/// A block's 32 weights as bytes for `maddubs` (unsigned × signed): the stored unsigned
/// values for Q4_0, Q4_1, Q5_0 and Q5_1 (`magnitudes`; the offset of Q4_0 and Q5_0 is taken
/// off with the activations' sums, see [`activation_offset`]), the magnitudes and the signed
/// weights whose signs go to the activations for Q8_0.
#[derive(Clone, Copy)]
struct Weights {
    magnitudes: __m256i,
    signs: __m256i,
}

/// The weights of the block at `block`.
///
/// Safety: AVX2/FMA/F16C available; `block` points at one whole block of `FORMAT`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn weights<const FORMAT: u8>(block: *const u8) -> Weights {
    // SAFETY: every block is at least 18 bytes; the offsets read below are inside it.
    let unsigned = unsafe {
        match FORMAT {
            Q4_0 => nibbles(block.add(2)),
            Q4_1 => nibbles(block.add(4)),
            Q5_0 => {
                let high = _mm256_and_si256(bits(block.add(2)), _mm256_set1_epi8(0x10));
                _mm256_or_si256(nibbles(block.add(6)), high)
            }
            Q5_1 => {
                let high = _mm256_and_si256(bits(block.add(4)), _mm256_set1_epi8(0x10));
                _mm256_or_si256(nibbles(block.add(8)), high)
            }
            Q5_0_WIDE => _mm256_loadu_si256(block.add(2).cast()),
            _ => {
                let signed = _mm256_loadu_si256(block.add(2).cast());
                return Weights {
                    magnitudes: _mm256_sign_epi8(signed, signed),
                    signs: signed,
                };
            }
        }
    };
    Weights {
        magnitudes: unsigned,
        signs: unsigned,
    }
}

/// For Q4_0 and Q5_0, whose weights are stored as `q + 8` and `q + 16`: each lane's
/// `-offset · (sum of its four activations)`, so that the unsigned products plus it are the
/// signed weights' products — the same exact integers ggml computes with signed weights.
/// Zero for the other formats. Taken once per activation block and shared by every row.
///
/// Safety: the CPU features of [`tile_body`].
#[inline(always)]
unsafe fn activation_offset<const FORMAT: u8, const VNNI: u8>(y: __m256i) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        let zero = _mm256_setzero_si256();
        if !matches!(FORMAT, Q4_0 | Q5_0 | Q5_0_WIDE) {
            return zero;
        }
        let ones = _mm256_set1_epi8(1);
        let sums = match VNNI {
            AVX512_VNNI => integer_products_avx512(zero, ones, y),
            AVX_VNNI => integer_products_vnni(zero, ones, y),
            _ => integer_products(ones, y),
        };
        let scaled = if FORMAT == Q4_0 {
            _mm256_slli_epi32::<3>(sums)
        } else {
            _mm256_slli_epi32::<4>(sums)
        };
        _mm256_sub_epi32(zero, scaled)
    }
}

/// The eight lane sums of four weight×activation products (as f32) of weights `x` and
/// activations `y`, `offset` ([`activation_offset`]) added.
///
/// Safety: the CPU features of [`tile_body`].
#[inline(always)]
unsafe fn products<const FORMAT: u8, const VNNI: u8>(
    x: Weights,
    y: __m256i,
    offset: __m256i,
) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe {
        let y = match FORMAT {
            Q8_0 => _mm256_sign_epi8(y, x.signs),
            _ => y,
        };
        let sums = match VNNI {
            AVX512_VNNI => integer_products_avx512(offset, x.magnitudes, y),
            AVX_VNNI => integer_products_vnni(offset, x.magnitudes, y),
            _ => _mm256_add_epi32(integer_products(x.magnitudes, y), offset),
        };
        _mm256_cvtepi32_ps(sums)
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

/// Unsigned `x` times signed `y`, summed over each four consecutive bytes. No pair sum
/// reaches the i16 saturation of maddubs: |x| <= 128 and |y| <= 127 give at most 32,512.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn integer_products(x: __m256i, y: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(x, y);
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// `acc` plus [`integer_products`] in one AVX-VNNI instruction: the same exact integer sums
/// (maddubs never saturates here, see there).
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[inline]
fn integer_products_vnni(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(acc, x, y)
}

/// `acc` plus [`integer_products`] in one AVX512-VNNI instruction on 256-bit vectors.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
#[inline]
fn integer_products_avx512(acc: __m256i, x: __m256i, y: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, x, y)
}

/// ggml's `hsum_float_8` (see [`super::blocks::sum_lanes`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn sum_lanes(x: __m256) -> f32 {
    let quad = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
}
