//! Llama-style decoder (llama, qwen2, qwen3 GGUF architectures), shaped like
//! candle-transformers' `quantized_llama.rs` but owned by Cairn so that its matrices multiply
//! through Cairn's quantized kernels with llama.cpp's arithmetic (see [`super::linear`]).
//! Variant differences (RoPE layout, q/k/v bias, q/k norm) are data in [`LlamaVariant`], chosen
//! by the family table.
//!
//! Attention runs over the layer's f16 key/value cache in place ([`super::attention`]), for
//! one decoded token and for a prompt alike. The norms, rotary embeddings and SwiGLU take
//! ggml's arithmetic ([`super::elementwise`]), so that a layer gives llama.cpp's bits.

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use super::Backbone;
use super::attention::{self, Geometry};
use super::elementwise;
use super::kv_cache::KvCache;
use super::linear::Linear;
use crate::Error;
use crate::error::CandleContext;
use crate::gguf::GgufFile;

/// How rotary position embeddings pair the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RopeStyle {
    /// Pairs (2i, 2i+1): llama as converted to GGUF.
    Interleaved,
    /// Pairs (i, i + d/2): qwen2, qwen3 (GPT-NeoX layout).
    Neox,
}

/// What distinguishes the llama-like architectures from each other.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LlamaVariant {
    pub rope: RopeStyle,
    pub qkv_bias: bool,
    pub qk_norm: bool,
}

/// Load-time choices for [`Llama::load`].
pub(crate) struct LlamaLoad<'a> {
    pub architecture: &'a str,
    pub variant: LlamaVariant,
    pub context_length: usize,
}

struct Attention {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Layer {
    attention_norm: Vec<f32>,
    attention: Attention,
    ffn_norm: Vec<f32>,
    mlp: Mlp,
    cache: KvCache,
}

struct Shape {
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    rms_eps: f32,
    rope: Rope,
}

/// The rotary embedding: how dimensions pair up and how their angles fall.
struct Rope {
    style: RopeStyle,
    /// `base^(-2/head_dim)`: each pair's angle is the previous pair's times this.
    theta_scale: f32,
    /// Per-pair divisors of the angle (Llama 3.1's `rope_freqs.weight`).
    freq_factors: Option<Vec<f32>>,
}

/// llama.cpp's default micro-batch (`n_ubatch`): a longer prompt runs in passes of this many
/// tokens, as llama.cpp runs it, so that each pass's attention takes the path llama.cpp's
/// takes for it (and one pass's activations stay bounded).
const MICRO_BATCH: usize = 512;

pub(crate) struct Llama {
    embeddings: Linear,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Linear,
    shape: Shape,
    activations: Activations,
}

impl Llama {
    pub(crate) fn load(
        gguf: &mut GgufFile,
        options: &LlamaLoad<'_>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, Error> {
        let arch = options.architecture;
        let key = |name: &str| format!("{arch}.{name}");
        let n_head = gguf.usize(&key("attention.head_count"))?;
        let n_kv_head = gguf
            .optional_u32(&key("attention.head_count_kv"))?
            .map_or(n_head, |v| v as usize);
        let hidden = gguf.usize(&key("embedding_length"))?;
        let n_layer = gguf.usize(&key("block_count"))?;
        if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 || n_layer == 0 {
            return Err(Error::Metadata {
                key: key("attention.head_count"),
                reason: format!("inconsistent heads: {n_head} query, {n_kv_head} key/value"),
            });
        }
        let head_dim = gguf
            .optional_u32(&key("attention.key_length"))?
            .map_or(hidden / n_head, |v| v as usize);
        let rope_dim = gguf
            .optional_u32(&key("rope.dimension_count"))?
            .map_or(head_dim, |v| v as usize);
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::Metadata {
                key: key("attention.key_length"),
                reason: format!("heads of {head_dim} values cannot be rotated in pairs"),
            });
        }
        if rope_dim != head_dim {
            return Err(Error::Metadata {
                key: key("rope.dimension_count"),
                reason: format!(
                    "partial rotary embeddings ({rope_dim} of {head_dim}) are not supported"
                ),
            });
        }
        let rms_eps = gguf
            .optional_f32(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        let rope_base = gguf
            .optional_f32(&key("rope.freq_base"))?
            .unwrap_or(10_000.0);

        let freq_factors = if gguf.has_tensor("rope_freqs.weight") {
            Some(dequantize_values(gguf, "rope_freqs.weight")?)
        } else {
            None
        };

        let embeddings = Linear::load(gguf, "token_embd.weight", None)?;
        // Tied embeddings (no output.weight) share the table's blocks.
        let output = if gguf.has_tensor("output.weight") {
            Linear::load(gguf, "output.weight", None)?
        } else {
            embeddings.clone()
        };
        let norm = dequantize_values(gguf, "output_norm.weight")?;

        let mut layers = Vec::with_capacity(n_layer);
        for index in 0..n_layer {
            progress(index, n_layer);
            layers.push(load_layer(gguf, index, options, (n_kv_head, head_dim))?);
        }
        progress(n_layer, n_layer);
        Ok(Self {
            embeddings,
            layers,
            norm,
            output,
            shape: Shape {
                n_head,
                n_kv_head,
                head_dim,
                rms_eps,
                rope: Rope {
                    style: options.variant.rope,
                    theta_scale: elementwise::rope_theta_scale(rope_base, head_dim),
                    freq_factors,
                },
            },
            activations: Activations::default(),
        })
    }

    /// The logits of the last of `tokens`, run at positions `index_pos..`.
    fn forward_values(
        &mut self,
        tokens: &[u32],
        index_pos: usize,
    ) -> candle_core::Result<Vec<f32>> {
        let seq = tokens.len();
        let cached = self.layers.first().map_or(index_pos, |l| l.cache.len());
        if cached != index_pos {
            candle_core::bail!("position {index_pos} does not follow the {cached} cached tokens");
        }
        let shape = &self.shape;
        let a = &mut self.activations;
        self.embeddings.embed(tokens, &mut a.x)?;
        let hidden = a.x.len() / seq;
        let angles = shape.rope.angles(index_pos, seq, shape.head_dim);
        for layer in &mut self.layers {
            let normed = sized(&mut a.normed, seq * hidden);
            elementwise::rms_norm(&a.x, &layer.attention_norm, shape.rms_eps, normed);
            attention(shape, layer, a, &angles)?;
            elementwise::add(&mut a.x, &a.out);

            let normed = sized(&mut a.normed, seq * hidden);
            elementwise::rms_norm(&a.x, &layer.ffn_norm, shape.rms_eps, normed);
            let mlp = &layer.mlp;
            let width = mlp.gate.rows();
            let gate = sized(&mut a.gate, seq * width);
            let up = sized(&mut a.up, seq * width);
            Linear::multiply_all([&mlp.gate, &mlp.up], &a.normed, [gate, up])?;
            let act = sized(&mut a.act, seq * width);
            elementwise::swiglu(&a.gate, &a.up, width, act);
            let out = sized(&mut a.out, seq * hidden);
            mlp.down.multiply(&a.act, out)?;
            elementwise::add(&mut a.x, &a.out);
        }
        let last = &a.x[(seq - 1) * hidden..];
        let normed = sized(&mut a.normed, hidden);
        elementwise::rms_norm(last, &self.norm, shape.rms_eps, normed);
        let mut logits = vec![0.0; self.output.rows()];
        self.output.multiply(&a.normed, &mut logits)?;
        Ok(logits)
    }
}

/// A forward pass's activations, one row per token, kept by the model between passes: a
/// prompt's layers reuse them rather than allocating (and faulting in) ~40 MB per layer for
/// the 0.5B model's 512-token micro-batch, and each decoded token reuses them again.
#[derive(Default)]
struct Activations {
    /// The residual stream, `(seq, hidden)`.
    x: Vec<f32>,
    /// `x` normed: the attention's or the MLP's input.
    normed: Vec<f32>,
    /// Queries, keys and values as the projections give them, `(seq, heads, head_dim)`.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Query and key rows normed per head (qwen3), before the rotation.
    q_normed: Vec<f32>,
    k_normed: Vec<f32>,
    /// The attention's output, `(seq, n_head * head_dim)`.
    attended: Vec<f32>,
    /// The output projection's or the MLP's output, `(seq, hidden)`: added to `x`.
    out: Vec<f32>,
    /// The MLP's gate, up and `silu(gate) * up`, `(seq, feed_forward)`.
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
}

/// `buffer` holding `len` values (stale ones: every step overwrites all of its output).
fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    buffer
}

impl Backbone for Llama {
    fn forward(&mut self, tokens: &[u32], index_pos: usize) -> Result<Tensor, Error> {
        if tokens.is_empty() {
            return Err(Error::InvalidParams {
                name: "tokens",
                reason: "cannot run the model on an empty input".to_string(),
            });
        }
        if index_pos == 0 {
            self.clear_kv_cache();
        }
        let mut logits = Vec::new();
        for (i, batch) in tokens.chunks(MICRO_BATCH).enumerate() {
            let position = index_pos + i * MICRO_BATCH;
            logits = self.forward_values(batch, position).context(|| {
                format!(
                    "run the model on {} tokens at position {position}",
                    batch.len()
                )
            })?;
        }
        let vocabulary = logits.len();
        Tensor::from_vec(logits, vocabulary, &Device::Cpu).context(|| "hold the logits".to_string())
    }

    fn clear_kv_cache(&mut self) {
        for layer in &mut self.layers {
            layer.cache.clear();
        }
    }
}

/// The layer's attention over `a.normed` into `a.out`, its keys and values appended to the
/// layer's cache. Every buffer is token-major, `(seq, heads, head_dim)`, from the projections
/// through the cache and the attention to the output projection: no transposes.
fn attention(
    shape: &Shape,
    layer: &mut Layer,
    a: &mut Activations,
    angles: &Angles,
) -> candle_core::Result<()> {
    let Shape {
        n_head,
        n_kv_head,
        head_dim,
        rms_eps,
        ref rope,
    } = *shape;
    let seq = angles.seq;
    let attn = &layer.attention;
    let q = sized(&mut a.q, seq * n_head * head_dim);
    let k = sized(&mut a.k, seq * n_kv_head * head_dim);
    let v = sized(&mut a.v, seq * n_kv_head * head_dim);
    Linear::multiply_all([&attn.wq, &attn.wk, &attn.wv], &a.normed, [q, k, v])?;
    let (q, k) = match (&attn.q_norm, &attn.k_norm) {
        (Some(q_norm), Some(k_norm)) => {
            let q_normed = sized(&mut a.q_normed, a.q.len());
            elementwise::rms_norm(&a.q, q_norm, rms_eps, q_normed);
            let k_normed = sized(&mut a.k_normed, a.k.len());
            elementwise::rms_norm(&a.k, k_norm, rms_eps, k_normed);
            (&mut a.q_normed, &mut a.k_normed)
        }
        _ => (&mut a.q, &mut a.k),
    };
    rope.rotate(q, angles, (n_head, head_dim));
    rope.rotate(k, angles, (n_kv_head, head_dim));
    layer.cache.append(k, &a.v, seq)?;
    let attended = sized(&mut a.attended, seq * n_head * head_dim);
    let geometry = Geometry {
        n_head,
        n_kv_head,
        head_dim,
    };
    let scale = 1.0 / (head_dim as f32).sqrt();
    attention::attend(q, &layer.cache.view(), geometry, scale, attended);
    let out = sized(&mut a.out, a.x.len());
    attn.wo.multiply(&a.attended, out)
}

/// Layer `index`; `kv_shape` is (key/value heads, head width) for its cache.
fn load_layer(
    gguf: &mut GgufFile,
    index: usize,
    options: &LlamaLoad<'_>,
    kv_shape: (usize, usize),
) -> Result<Layer, Error> {
    let name = |suffix: &str| format!("blk.{index}.{suffix}");
    let variant = options.variant;
    let linear = |gguf: &mut GgufFile, part: &str, bias: bool| -> Result<Linear, Error> {
        let bias = if bias {
            Some(dequantize_values(gguf, &name(&format!("{part}.bias")))?)
        } else {
            None
        };
        Linear::load(gguf, &name(&format!("{part}.weight")), bias)
    };
    let attention = Attention {
        wq: linear(gguf, "attn_q", variant.qkv_bias)?,
        wk: linear(gguf, "attn_k", variant.qkv_bias)?,
        wv: linear(gguf, "attn_v", variant.qkv_bias)?,
        wo: linear(gguf, "attn_output", false)?,
        q_norm: if variant.qk_norm {
            Some(dequantize_values(gguf, &name("attn_q_norm.weight"))?)
        } else {
            None
        },
        k_norm: if variant.qk_norm {
            Some(dequantize_values(gguf, &name("attn_k_norm.weight"))?)
        } else {
            None
        },
    };
    let mlp = Mlp {
        gate: linear(gguf, "ffn_gate", false)?,
        up: linear(gguf, "ffn_up", false)?,
        down: linear(gguf, "ffn_down", false)?,
    };
    Ok(Layer {
        attention_norm: dequantize_values(gguf, &name("attn_norm.weight"))?,
        attention,
        ffn_norm: dequantize_values(gguf, &name("ffn_norm.weight"))?,
        mlp,
        cache: KvCache::new(kv_shape.0, kv_shape.1, options.context_length),
    })
}

fn dequantize(gguf: &mut GgufFile, name: &str) -> Result<Tensor, Error> {
    let tensor: QTensor = gguf.tensor(name)?;
    tensor
        .dequantize(&Device::Cpu)
        .context(|| format!("dequantize {name}"))
}

/// Tensor `name` as a flat list of f32 values (norm weights, frequency factors).
fn dequantize_values(gguf: &mut GgufFile, name: &str) -> Result<Vec<f32>, Error> {
    dequantize(gguf, name)?
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .context(|| format!("read {name}"))
}

/// Each position's `(cos, sin)` per dimension pair, `(seq, head_dim / 2)` each.
struct Angles {
    cos: Vec<f32>,
    sin: Vec<f32>,
    seq: usize,
}

impl Rope {
    /// The angles of positions `first..first + seq`, made per forward pass: a few dozen
    /// cosines per position cost less than keeping a table for the whole context.
    fn angles(&self, first: usize, seq: usize, head_dim: usize) -> Angles {
        let pairs = head_dim / 2;
        let mut cos = vec![0.0; seq * pairs];
        let mut sin = vec![0.0; seq * pairs];
        for (t, (cos, sin)) in cos
            .chunks_exact_mut(pairs.max(1))
            .zip(sin.chunks_exact_mut(pairs.max(1)))
            .enumerate()
        {
            elementwise::rope_angles(
                first + t,
                self.theta_scale,
                self.freq_factors.as_deref(),
                pairs,
                cos,
                sin,
            );
        }
        Angles { cos, sin, seq }
    }

    /// Rotates `x`, `(seq, heads, head_dim)` with `(heads, head_dim)` given, by its
    /// positions' angles; a batch's tokens on the current pool (the model's).
    fn rotate(&self, x: &mut [f32], angles: &Angles, (heads, head_dim): (usize, usize)) {
        use rayon::prelude::*;
        let pairs = head_dim / 2;
        if pairs == 0 || heads == 0 {
            return;
        }
        x.par_chunks_exact_mut(heads * head_dim)
            .enumerate()
            .with_min_len(ROPE_TOKENS_PER_TASK)
            .for_each(|(t, x)| {
                let cos = &angles.cos[t * pairs..][..pairs];
                let sin = &angles.sin[t * pairs..][..pairs];
                for x in x.chunks_exact_mut(head_dim) {
                    for i in 0..pairs {
                        let (a, b) = match self.style {
                            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                            RopeStyle::Neox => (i, i + pairs),
                        };
                        let (x0, x1) = rotate_pair(x[a], x[b], cos[i], sin[i]);
                        x[a] = x0;
                        x[b] = x1;
                    }
                }
            });
    }
}

/// Tokens per task of the rotary embedding: one decoded token stays on the calling thread.
const ROPE_TOKENS_PER_TASK: usize = 8;

/// `(x0 cos - x1 sin, x0 sin + x1 cos)` as ggml's `rotate_pairs` computes it: GCC fuses each
/// first product with the sum (`-ffp-contract=fast`, its default for GNU C++), so the second
/// product is rounded alone and the first is not.
#[inline]
fn rotate_pair(x0: f32, x1: f32, cos: f32, sin: f32) -> (f32, f32) {
    (x0.mul_add(cos, -(x1 * sin)), x0.mul_add(sin, x1 * cos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(style: RopeStyle) -> Rope {
        Rope {
            style,
            theta_scale: elementwise::rope_theta_scale(10_000.0, 8),
            freq_factors: None,
        }
    }

    /// A batch's rows are `(token, head)`: each token's heads turn by that token's angles,
    /// on the pool or not, as when the tokens come one at a time.
    #[test]
    fn a_batch_rotates_each_token_by_its_own_position() {
        let (heads, head_dim, seq, first) = (3, 8, 40, 7);
        let x: Vec<f32> = (0..seq * heads * head_dim)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 10.0)
            .collect();
        for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
            let rope = rope(style);
            let mut batch = x.clone();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .expect("pool");
            let angles = rope.angles(first, seq, head_dim);
            pool.install(|| rope.rotate(&mut batch, &angles, (heads, head_dim)));
            for (t, token) in x.chunks_exact(heads * head_dim).enumerate() {
                let mut alone = token.to_vec();
                let angles = rope.angles(first + t, 1, head_dim);
                rope.rotate(&mut alone, &angles, (heads, head_dim));
                let got = &batch[t * heads * head_dim..][..heads * head_dim];
                assert_eq!(got, alone.as_slice(), "{style:?} token {t}");
                assert_ne!(got, token, "{style:?} token {t} turned");
            }
        }
    }
}
