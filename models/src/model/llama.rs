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
use candle_core::{DType, Device, Tensor};

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
    device: Device,
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
        let device = Device::Cpu;

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
            device,
        })
    }

    fn forward_tensor(&mut self, tokens: &[u32], index_pos: usize) -> candle_core::Result<Tensor> {
        let seq = tokens.len();
        let cached = self.layers.first().map_or(index_pos, |l| l.cache.len());
        if cached != index_pos {
            candle_core::bail!("position {index_pos} does not follow the {cached} cached tokens");
        }
        let mut x = self.embeddings.embed(tokens, &self.device)?;
        let angles = self.shape.rope.angles(index_pos, seq, self.shape.head_dim);
        for layer in &mut self.layers {
            let h = rms_norm(&x, &layer.attention_norm, self.shape.rms_eps)?;
            let attn = attention(&self.shape, layer, &h, &angles)?;
            x = (x + attn)?;
            let h = rms_norm(&x, &layer.ffn_norm, self.shape.rms_eps)?;
            let [gate, up] = Linear::forward_all([&layer.mlp.gate, &layer.mlp.up], &h)?;
            let mlp = layer.mlp.down.forward(&swiglu(&gate, &up)?)?;
            x = (x + mlp)?;
        }
        let last = x.narrow(1, seq - 1, 1)?.contiguous()?;
        let last = rms_norm(&last, &self.norm, self.shape.rms_eps)?;
        self.output
            .forward(&last)?
            .flatten_all()?
            .to_dtype(DType::F32)
    }
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
        let mut logits = None;
        for (i, batch) in tokens.chunks(MICRO_BATCH).enumerate() {
            let position = index_pos + i * MICRO_BATCH;
            logits = Some(self.forward_tensor(batch, position).context(|| {
                format!(
                    "run the model on {} tokens at position {position}",
                    batch.len()
                )
            })?);
        }
        logits.ok_or_else(|| Error::InvalidParams {
            name: "tokens",
            reason: "cannot run the model on an empty input".to_string(),
        })
    }

    fn clear_kv_cache(&mut self) {
        for layer in &mut self.layers {
            layer.cache.clear();
        }
    }
}

fn attention(
    shape: &Shape,
    layer: &mut Layer,
    x: &Tensor,
    angles: &Angles,
) -> candle_core::Result<Tensor> {
    let (b, seq, _) = x.dims3()?;
    let Shape {
        n_head,
        n_kv_head,
        head_dim,
        rms_eps,
        ref rope,
    } = *shape;
    let attn = &layer.attention;
    // (1, heads, seq, head_dim) contiguous: head by head, the tokens in order.
    let heads = |t: Tensor, n: usize, norm: &Option<Vec<f32>>| -> candle_core::Result<Tensor> {
        let t = t.reshape((b, seq, n, head_dim))?;
        let t = match norm {
            Some(w) => rms_norm(&t.contiguous()?, w, rms_eps)?,
            None => t,
        };
        t.transpose(1, 2)?.contiguous()
    };
    let values = |t: Tensor| -> candle_core::Result<Vec<f32>> { t.flatten_all()?.to_vec1() };
    let [q, k, v] = Linear::forward_all([&attn.wq, &attn.wk, &attn.wv], x)?;
    let mut q = values(heads(q, n_head, &attn.q_norm)?)?;
    let mut k = values(heads(k, n_kv_head, &attn.k_norm)?)?;
    let v = values(heads(v, n_kv_head, &None)?)?;
    rope.rotate(&mut q, angles, head_dim);
    rope.rotate(&mut k, angles, head_dim);
    layer.cache.append(&k, &v, seq)?;
    let mut y = vec![0.0f32; seq * n_head * head_dim];
    let geometry = Geometry {
        n_head,
        n_kv_head,
        head_dim,
    };
    let scale = 1.0 / (head_dim as f32).sqrt();
    attention::attend(&q, &layer.cache.view(), geometry, scale, &mut y);
    let y = Tensor::from_vec(y, (b, seq, n_head * head_dim), x.device())?;
    attn.wo.forward(&y)
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
            Some(dequantize(gguf, &name(&format!("{part}.bias")))?)
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

/// ggml's RMS norm of each `weight.len()`-wide row of `x`, times the weight.
fn rms_norm(x: &Tensor, weight: &[f32], eps: f32) -> candle_core::Result<Tensor> {
    let values = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0.0; values.len()];
    elementwise::rms_norm(&values, weight, eps, &mut out);
    Tensor::from_vec(out, x.dims(), x.device())
}

/// ggml's SwiGLU: `silu(gate) * up`.
fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    let gate_values = gate.flatten_all()?.to_vec1::<f32>()?;
    let up_values = up.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0.0; gate_values.len()];
    let width = gate.dims().last().copied().unwrap_or(0);
    elementwise::swiglu(&gate_values, &up_values, width, &mut out);
    Tensor::from_vec(out, gate.dims(), gate.device())
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

    /// Rotates `x`, `(heads, seq, head_dim)`, by its positions' angles.
    fn rotate(&self, x: &mut [f32], angles: &Angles, head_dim: usize) {
        let pairs = head_dim / 2;
        if pairs == 0 {
            return;
        }
        for (row, x) in x.chunks_exact_mut(head_dim).enumerate() {
            let t = row % angles.seq;
            let cos = &angles.cos[t * pairs..][..pairs];
            let sin = &angles.sin[t * pairs..][..pairs];
            for i in 0..pairs {
                let (a, b) = match self.style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + pairs),
                };
                let (x0, x1) = (x[a], x[b]);
                let (x0, x1) = rotate_pair(x0, x1, cos[i], sin[i]);
                x[a] = x0;
                x[b] = x1;
            }
        }
    }
}

/// `(x0 cos - x1 sin, x0 sin + x1 cos)` as ggml's `rotate_pairs` computes it: GCC fuses each
/// first product with the sum (`-ffp-contract=fast`, its default for GNU C++), so the second
/// product is rounded alone and the first is not.
#[inline]
fn rotate_pair(x0: f32, x1: f32, cos: f32, sin: f32) -> (f32, f32) {
    (x0.mul_add(cos, -(x1 * sin)), x0.mul_add(sin, x1 * cos))
}
