//! Llama-style decoder (llama, qwen2, qwen3 GGUF architectures), shaped like
//! candle-transformers' `quantized_llama.rs` but owned by Cairn so that its matrices multiply
//! through Cairn's quantized kernels with llama.cpp's arithmetic (see [`super::linear`]).
//! Variant differences (RoPE layout, q/k/v bias, q/k norm) are data in [`LlamaVariant`], chosen
//! by the family table.
//!
//! Attention runs over the layer's f16 key/value cache in place ([`super::attention`]), for
//! one decoded token and for a prompt alike.

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use super::Backbone;
use super::attention::{self, Geometry};
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
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Layer {
    attention_norm: Tensor,
    attention: Attention,
    ffn_norm: Tensor,
    mlp: Mlp,
    cache: KvCache,
}

struct Shape {
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    rms_eps: f32,
    rope: RopeStyle,
}

pub(crate) struct Llama {
    embeddings: Linear,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
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

        let rope_freqs = if gguf.has_tensor("rope_freqs.weight") {
            Some(dequantize(gguf, "rope_freqs.weight")?)
        } else {
            None
        };
        let (cos, sin) = rope_tables(head_dim, rope_base, options.context_length, rope_freqs)
            .context(|| "compute rotary embedding tables".to_string())?;

        let embeddings = Linear::load(gguf, "token_embd.weight", None)?;
        // Tied embeddings (no output.weight) share the table's blocks.
        let output = if gguf.has_tensor("output.weight") {
            Linear::load(gguf, "output.weight", None)?
        } else {
            embeddings.clone()
        };
        let norm = dequantize(gguf, "output_norm.weight")?;

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
            cos,
            sin,
            shape: Shape {
                n_head,
                n_kv_head,
                head_dim,
                rms_eps,
                rope: options.variant.rope,
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
        let cos = self.cos.narrow(0, index_pos, seq)?;
        let sin = self.sin.narrow(0, index_pos, seq)?;
        for layer in &mut self.layers {
            let h = candle_nn::ops::rms_norm(&x, &layer.attention_norm, self.shape.rms_eps)?;
            let attn = attention(&self.shape, layer, &h, &cos, &sin)?;
            x = (x + attn)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, self.shape.rms_eps)?;
            let gate = layer.mlp.gate.forward(&h)?;
            let up = layer.mlp.up.forward(&h)?;
            let mlp = layer
                .mlp
                .down
                .forward(&(candle_nn::ops::silu(&gate)? * up)?)?;
            x = (x + mlp)?;
        }
        let last = x.narrow(1, seq - 1, 1)?.contiguous()?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, self.shape.rms_eps)?;
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
        self.forward_tensor(tokens, index_pos).context(|| {
            format!(
                "run the model on {} tokens at position {index_pos}",
                tokens.len()
            )
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
    cos: &Tensor,
    sin: &Tensor,
) -> candle_core::Result<Tensor> {
    let (b, seq, _) = x.dims3()?;
    let Shape {
        n_head,
        n_kv_head,
        head_dim,
        rms_eps,
        rope,
    } = *shape;
    let attn = &layer.attention;
    let heads = |t: Tensor, n: usize, norm: &Option<Tensor>| -> candle_core::Result<Tensor> {
        let t = t.reshape((b, seq, n, head_dim))?;
        let t = match norm {
            Some(w) => candle_nn::ops::rms_norm(&t.contiguous()?, w, rms_eps)?,
            None => t,
        };
        t.transpose(1, 2)?.contiguous()
    };
    let q = heads(attn.wq.forward(x)?, n_head, &attn.q_norm)?;
    let k = heads(attn.wk.forward(x)?, n_kv_head, &attn.k_norm)?;
    let v = heads(attn.wv.forward(x)?, n_kv_head, &None)?;
    let (q, k) = match rope {
        RopeStyle::Interleaved => (
            candle_nn::rotary_emb::rope_i(&q, cos, sin)?,
            candle_nn::rotary_emb::rope_i(&k, cos, sin)?,
        ),
        RopeStyle::Neox => (
            candle_nn::rotary_emb::rope(&q, cos, sin)?,
            candle_nn::rotary_emb::rope(&k, cos, sin)?,
        ),
    };
    // (1, heads, seq, head_dim) contiguous: head by head, the tokens in order.
    let q = q.flatten_all()?.to_vec1::<f32>()?;
    let k = k.flatten_all()?.to_vec1::<f32>()?;
    let v = v.flatten_all()?.to_vec1::<f32>()?;
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
            Some(dequantize(gguf, &name("attn_q_norm.weight"))?)
        } else {
            None
        },
        k_norm: if variant.qk_norm {
            Some(dequantize(gguf, &name("attn_k_norm.weight"))?)
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
        attention_norm: dequantize(gguf, &name("attn_norm.weight"))?,
        attention,
        ffn_norm: dequantize(gguf, &name("ffn_norm.weight"))?,
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

/// cos/sin tables `(max_len, head_dim / 2)`; `freq_factors` divides each frequency
/// (Llama 3.1 `rope_freqs.weight`).
fn rope_tables(
    head_dim: usize,
    base: f32,
    max_len: usize,
    freq_factors: Option<Tensor>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let factors: Option<Vec<f32>> = freq_factors
        .map(|t| t.flatten_all()?.to_vec1())
        .transpose()?;
    let inv_freq: Vec<f32> = (0..head_dim / 2)
        .map(|i| {
            let f = 1.0 / base.powf((2 * i) as f32 / head_dim as f32);
            match &factors {
                Some(factors) => f / factors.get(i).copied().unwrap_or(1.0),
                None => f,
            }
        })
        .collect();
    let inv_freq = Tensor::new(inv_freq.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let positions = Tensor::arange(0u32, max_len as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .unsqueeze(1)?;
    let angles = positions.broadcast_mul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}
