//! The element-wise steps of a llama-family layer in llama.cpp's arithmetic: RMS norm, the
//! rotary embedding's angles and SwiGLU, operation for operation as ggml's CPU backend computes
//! them in its AVX2 build (the build the shared reference vectors come from). Each step here
//! rounds where ggml rounds, so a layer keeps llama.cpp's bits and greedy output does not drift
//! after the first low-margin token. candle's versions differ in the last bits: its RMS norm
//! sums in f32 and divides by the root instead of multiplying by its reciprocal, its SiLU takes
//! libm's `exp` where ggml takes a vector polynomial, and its rotary tables raise the base to
//! each dimension's power where ggml multiplies the angle down dimension by dimension.
//!
//! Every function is plain Rust; where a vector of ggml's is emulated lane by lane the lane's
//! operations are written out in order, fused multiply-adds as `mul_add`.

/// Below this many rows a step runs on the calling thread: one decoded token's row (or its
/// heads' rows) costs less than handing it to another thread.
const ROWS_PER_TASK: usize = 16;

/// Values per task of [`add`]: a prompt's residual stream splits over the pool, one token's
/// stays on the calling thread.
const VALUES_PER_TASK: usize = 16 * 1024;

/// `out = x / rms(x) * weight` for each row of `weight.len()` values of `x`: ggml's
/// `rms_norm` (squares summed in f64, the mean and its reciprocal root in f32) followed by its
/// `mul` by the weight. A batch's rows run on the current rayon pool (the model's).
pub(crate) fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    use rayon::prelude::*;
    let width = weight.len();
    if width == 0 {
        return;
    }
    out.par_chunks_exact_mut(width)
        .zip(x.par_chunks_exact(width))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(out, row)| {
            let sum: f64 = row.iter().map(|&v| f64::from(v * v)).sum();
            let mean = (sum / width as f64) as f32;
            let scale = 1.0 / (mean + eps).sqrt();
            for ((y, &v), &w) in out.iter_mut().zip(row).zip(weight) {
                *y = v * scale * w;
            }
        });
}

/// `x += y` value by value (ggml's `add`: a residual connection), on the current pool for a
/// batch.
pub(crate) fn add(x: &mut [f32], y: &[f32]) {
    use rayon::prelude::*;
    x.par_chunks_mut(VALUES_PER_TASK)
        .zip(y.par_chunks(VALUES_PER_TASK))
        .for_each(|(x, y)| {
            for (x, y) in x.iter_mut().zip(y) {
                *x += y;
            }
        });
}

/// ggml's AVX2 vector lanes for SwiGLU: whole groups of eight take the vector `exp`, the
/// rest libm's.
const SWIGLU_LANES: usize = 8;

/// `out = silu(gate) * up` for each row of `width` values, ggml's `swiglu`: ggml's groups of
/// eight lanes start again at each row, so a width that is not a multiple of eight leaves a
/// libm tail in every row. Rows run on the current rayon pool (the model's).
pub(crate) fn swiglu(gate: &[f32], up: &[f32], width: usize, out: &mut [f32]) {
    use rayon::prelude::*;
    if width == 0 {
        return;
    }
    out.par_chunks_mut(width)
        .zip(gate.par_chunks(width).zip(up.par_chunks(width)))
        .for_each(|(out, (gate, up))| swiglu_row(gate, up, out));
}

#[allow(unsafe_code)]
fn swiglu_row(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { swiglu_fma(gate, up, out) };
        return;
    }
    swiglu_lanes(gate, up, out);
}

/// [`swiglu_lanes`] on AVX2/FMA vectors: whole groups of eight through [`silu_vector`]
/// (ggml's own instructions, which compute each lane as [`silu_vector_lane`] does: the scalar
/// lanes, with their branch, do not vectorize and took ~8% of a prefill), the rest as there.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_fma(gate: &[f32], up: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::{_mm256_loadu_ps, _mm256_mul_ps, _mm256_storeu_ps};
    let n = gate.len().min(up.len()).min(out.len());
    let whole = n - n % SWIGLU_LANES;
    let groups = (out[..whole].chunks_exact_mut(SWIGLU_LANES))
        .zip(gate[..whole].chunks_exact(SWIGLU_LANES))
        .zip(up[..whole].chunks_exact(SWIGLU_LANES));
    for ((out, gate), up) in groups {
        // SAFETY: each chunk holds eight f32.
        unsafe {
            let silu = silu_vector(_mm256_loadu_ps(gate.as_ptr()));
            _mm256_storeu_ps(
                out.as_mut_ptr(),
                _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr())),
            );
        }
    }
    swiglu_lanes(&gate[whole..n], &up[whole..n], &mut out[whole..n]);
}

/// ggml's AVX2 `ggml_v_silu`: [`silu_vector_lane`] on eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn silu_vector(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::{_mm256_add_ps, _mm256_div_ps, _mm256_set1_ps, _mm256_sub_ps};
    let minus_x = _mm256_sub_ps(_mm256_set1_ps(0.0), x);
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), expf_vector(minus_x)))
}

/// ggml's AVX2 `ggml_v_expf`: [`expf_vector_lane`] on eight lanes, instruction for
/// instruction (`fnmadd(n, c, x)` is the lane's `(-n).mul_add(c, x)`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn expf_vector(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::{
        _CMP_GT_OQ, _CMP_LE_OQ, _mm256_add_epi32, _mm256_and_si256, _mm256_andnot_ps,
        _mm256_blendv_ps, _mm256_castps_si256, _mm256_castsi256_ps, _mm256_cmp_ps, _mm256_fmadd_ps,
        _mm256_fnmadd_ps, _mm256_movemask_ps, _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_ps,
        _mm256_setzero_ps, _mm256_slli_epi32, _mm256_sub_epi32, _mm256_sub_ps,
    };
    let constant = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let r = constant(0x4b40_0000);
    let z = _mm256_fmadd_ps(x, constant(0x3fb8_aa3b), r);
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(
        n,
        constant(0x35bf_be8e),
        _mm256_fnmadd_ps(n, constant(0x3f31_7200), x),
    );
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let one = _mm256_castps_si256(_mm256_set1_ps(1.0));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(e, one));
    let magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let c = _mm256_cmp_ps::<_CMP_GT_OQ>(magnitude, _mm256_set1_ps(126.0));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(constant(0x3c07_2010), b, constant(0x3d2b_9f17)),
            u,
            _mm256_fmadd_ps(constant(0x3e2a_af33), b, constant(0x3eff_fedb)),
        ),
        u,
        _mm256_mul_ps(constant(0x3f7f_fff6), b),
    );
    let common = _mm256_fmadd_ps(j, k, k);
    if _mm256_movemask_ps(c) == 0 {
        return common;
    }
    let below = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps()));
    let g = _mm256_and_si256(below, _mm256_set1_epi32(0x8200_0000_u32 as i32));
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let d = _mm256_cmp_ps::<_CMP_GT_OQ>(magnitude, _mm256_set1_ps(192.0));
    let near = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    let far = _mm256_mul_ps(s1, s1);
    _mm256_blendv_ps(_mm256_blendv_ps(common, near, c), far, d)
}

#[inline(always)]
fn swiglu_lanes(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = gate.len().min(up.len()).min(out.len());
    let whole = n - n % SWIGLU_LANES;
    for i in 0..whole {
        out[i] = silu_vector_lane(gate[i]) * up[i];
    }
    for i in whole..n {
        let x = gate[i];
        out[i] = x / (1.0 + (-x).exp()) * up[i];
    }
}

/// One lane of ggml's AVX2 `ggml_v_silu`: `x / (1 + ggml_v_expf(0 - x))`.
#[inline(always)]
fn silu_vector_lane(x: f32) -> f32 {
    x / (1.0 + expf_vector_lane(0.0 - x))
}

/// One lane of ggml's AVX2 `ggml_v_expf` (after Arm's optimized routines: `2^n · (1 + p(b))`
/// with `n = round(x / ln 2)`, `b` the reduced argument, and a fallback for `|n| > 126`).
#[inline(always)]
pub(crate) fn expf_vector_lane(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // 0x1.715476p+0
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),                  // 0x1.7f7d1cp-20
        (-n).mul_add(f32::from_bits(0x3f31_7200), x), // 0x1.62e4p-1
    );
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010) // 0x1.0e4020p-7
        .mul_add(b, f32::from_bits(0x3d2b_9f17)) // 0x1.573e2ep-5
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)), // 0x1.555e66p-3, 0x1.fffdb6p-2
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6) * b); // 0x1.ffffecp-1
    // ggml's comparisons are ordered: a NaN lane takes the common path.
    let (c, d) = (n.abs() > 126.0, n.abs() > 192.0);
    if !c {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if d { s1 * s1 } else { s2.mul_add(j, s2) * s1 }
}

/// The rotary embedding's `(cos, sin)` for each dimension pair at `position`, as ggml's
/// `rope_cache_init` makes them: the angle starts at the position and is multiplied by
/// `base^(-2/dims)` once per pair (rounding each time), divided by the pair's frequency factor
/// where the model has them, and its cosine and sine are libm's.
pub(crate) fn rope_angles(
    position: usize,
    theta_scale: f32,
    freq_factors: Option<&[f32]>,
    pairs: usize,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    let mut theta = position as f32;
    for i in 0..pairs {
        let factor = freq_factors.and_then(|f| f.get(i).copied()).unwrap_or(1.0);
        let angle = theta / factor;
        cos[i] = angle.cos();
        sin[i] = angle.sin();
        theta *= theta_scale;
    }
}

/// ggml's `theta_scale` for `dims` rotated dimensions: `base^(-2/dims)` in f32.
pub(crate) fn rope_theta_scale(base: f32, dims: usize) -> f32 {
    base.powf(-2.0 / dims as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vector_exp_is_within_two_ulps_of_libm_and_handles_the_ends() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.04;
            let (got, want) = (expf_vector_lane(x), x.exp());
            let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulps <= 2, "exp({x}): {got} vs {want}");
        }
        assert_eq!(expf_vector_lane(0.0), 1.0);
        assert_eq!(expf_vector_lane(-200.0), 0.0);
        assert_eq!(expf_vector_lane(200.0), f32::INFINITY);
    }

    #[test]
    fn swiglu_takes_the_vector_exp_on_whole_groups_of_each_row_and_libm_on_the_rest() {
        // Two rows of 11: lanes 0..8 of each row take the vector exp, 8..11 libm's.
        let gate: Vec<f32> = (0..22)
            .map(|i| (i % 11) as f32 * 0.7 - 3.0 + (i / 11) as f32)
            .collect();
        let up: Vec<f32> = (0..22).map(|i| 1.0 + i as f32 * 0.1).collect();
        let mut fast = vec![f32::NAN; 22];
        let mut plain = vec![f32::NAN; 22];
        swiglu(&gate, &up, 11, &mut fast);
        for row in 0..2 {
            let at = row * 11..(row + 1) * 11;
            swiglu_lanes(&gate[at.clone()], &up[at.clone()], &mut plain[at]);
        }
        assert_eq!(fast, plain, "FMA build and plain lanes agree bit for bit");
        for i in 0..22 {
            let x = gate[i];
            let exact = x / (1.0 + (-x).exp()) * up[i];
            assert!(
                (fast[i] - exact).abs() <= 1e-6 * exact.abs().max(1.0),
                "{i}"
            );
            if i % 11 >= 8 {
                assert_eq!(fast[i], x / (1.0 + (-x).exp()) * up[i], "libm tail at {i}");
            } else {
                assert_eq!(fast[i], silu_vector_lane(x) * up[i], "vector lane at {i}");
            }
        }
    }

    #[test]
    fn the_vector_swiglu_is_the_lanes_bit_for_bit_on_every_range() {
        // Small and large gates (past ±87, where exp leaves the common path, and past ±133),
        // infinities and NaN, in rows of 8, 16 and a tail.
        let mut gate: Vec<f32> = (-400..400).map(|i| i as f32 * 0.4).collect();
        gate.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -0.0,
            0.0,
            1e-30,
            -1e-30,
        ]);
        gate.extend((0..57).map(|i| (i as f32 * 2.7).sin() * 150.0));
        let up: Vec<f32> = (0..gate.len()).map(|i| 1.0 - i as f32 * 0.003).collect();
        let mut fast = vec![f32::NAN; gate.len()];
        let mut plain = vec![f32::NAN; gate.len()];
        swiglu(&gate, &up, gate.len(), &mut fast);
        swiglu_lanes(&gate, &up, &mut plain);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fast), bits(&plain));
    }

    #[test]
    fn rms_norm_multiplies_by_the_reciprocal_root_of_the_f64_mean() {
        let x = [1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5, 0.25, 8.0];
        let w = [0.5f32, 1.0, 1.5, 2.0];
        let mut out = [0.0f32; 8];
        rms_norm(&x, &w, 1e-6, &mut out);
        for (row, got) in x.chunks(4).zip(out.chunks(4)) {
            let mean = row
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                / 4.0;
            let scale = 1.0 / ((mean as f32) + 1e-6).sqrt();
            for i in 0..4 {
                assert_eq!(got[i], row[i] * scale * w[i]);
            }
        }
    }

    #[test]
    fn rope_angles_multiply_down_from_the_position() {
        let (mut cos, mut sin) = ([0.0f32; 4], [0.0f32; 4]);
        let scale = rope_theta_scale(10_000.0, 8);
        rope_angles(3, scale, None, 4, &mut cos, &mut sin);
        let mut theta = 3.0f32;
        for i in 0..4 {
            assert_eq!((cos[i], sin[i]), (theta.cos(), theta.sin()));
            theta *= scale;
        }
        assert!((scale - 0.1).abs() < 1e-6);
    }
}
