//! [`LocalModel`]: a GGUF model loaded in-process, implementing [`LanguageModel`]. Loading
//! reads the header, builds the tokenizer, picks the family from the table in
//! [`crate::family`] and the chat template, then reads the weights layer by layer, reporting
//! progress. The backbone (weights + KV cache) sits behind a mutex: calls from several
//! threads are served one at a time.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, UNIX_EPOCH};

use crate::Error;
use crate::api::{
    GenerateParams, Generation, LanguageModel, LoadOptions, LoadProgress, LoadStage, ModelIdentity,
};
use crate::chat::{ChatMessage, ChatTemplate};
use crate::constrained::JsonConstraints;
use crate::decode_width::{Width, WidthChooser};
use crate::error::CandleContext;
use crate::family::{BackboneKind, family_for, supported_architectures};
use crate::generate::{self, Request};
use crate::gguf::GgufFile;
use crate::model::Backbone;
use crate::model::delegated::Delegated;
use crate::model::llama::{Llama, LlamaLoad};
use crate::threads;
use crate::tokenizer::TextTokenizer;

/// A local GGUF model. Cheap to share as `Arc<dyn LanguageModel>`.
pub struct LocalModel {
    identity: ModelIdentity,
    tokenizer: Arc<TextTokenizer>,
    template: ChatTemplate,
    backbone: Mutex<Box<dyn Backbone>>,
    pool: rayon::ThreadPool,
    /// A one-thread pool for decoding when that is faster (a busy machine), `None` when the
    /// model's pool has one thread anyway; see [`crate::decode_width`].
    narrow: Option<rayon::ThreadPool>,
    width: Mutex<WidthChooser>,
    threads: usize,
    logits_width: usize,
    stop_ids: Vec<u32>,
    json: OnceLock<Result<Arc<JsonConstraints>, String>>,
}

impl LocalModel {
    /// Loads the GGUF model at `path`. `progress` is called as loading advances.
    pub fn load(
        path: &Path,
        options: LoadOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self, Error> {
        let started = std::time::Instant::now();
        progress(LoadProgress {
            stage: LoadStage::ReadingHeader,
            done: 0,
            total: 1,
        });
        let mut gguf = GgufFile::open(path)?;
        let architecture = gguf.architecture()?;
        let family = family_for(&architecture).ok_or_else(|| Error::UnsupportedArchitecture {
            path: path.to_path_buf(),
            architecture: architecture.clone(),
            supported: supported_architectures(),
        })?;

        progress(LoadProgress {
            stage: LoadStage::Tokenizer,
            done: 0,
            total: 1,
        });
        let tokenizer = Arc::new(TextTokenizer::load(&gguf)?);
        let jinja = gguf.optional_string("tokenizer.chat_template")?;
        let template = ChatTemplate::detect(
            jinja.as_deref(),
            |token| tokenizer.token_id(token).is_some(),
            family.default_template,
        );
        let model_context = gguf
            .optional_u32(&format!("{architecture}.context_length"))?
            .map_or(4096, |v| v as usize);
        let context_length = options
            .context_length
            .map_or(model_context, |asked| asked.min(model_context))
            .max(2);
        let logits_width = logits_width(&gguf).unwrap_or_else(|| tokenizer.vocab_size());
        let name = gguf.optional_string("general.name")?;
        let (pool, threads) = crate::threads::build_pool(options.threads)?;
        let narrow = match threads {
            1 => None,
            _ => Some(crate::threads::build_pool(Some(1))?.0),
        };

        let mut on_layer = |done, total| {
            progress(LoadProgress {
                stage: LoadStage::Weights,
                done,
                total,
            })
        };
        let backbone: Box<dyn Backbone> = match family.backbone {
            BackboneKind::Llama(variant) => {
                let load = LlamaLoad {
                    architecture: &architecture,
                    variant,
                    context_length,
                };
                let model = Llama::load(&mut gguf, &load, &mut on_layer)?;
                Box::new(model)
            }
            BackboneKind::Delegated(kind) => {
                on_layer(0, 1);
                let model = Delegated::load(gguf, kind)?;
                on_layer(1, 1);
                Box::new(model)
            }
        };

        let mut stop_ids = tokenizer.stop_ids();
        if let Some(id) = template.end_of_turn().and_then(|t| tokenizer.token_id(t))
            && !stop_ids.contains(&id)
        {
            stop_ids.push(id);
        }
        let identity = identify(
            path,
            &options,
            &architecture,
            name,
            context_length,
            &template,
        )?;
        progress(LoadProgress {
            stage: LoadStage::Ready,
            done: 1,
            total: 1,
        });
        tracing::info!(
            architecture,
            path = %path.display(),
            context_length,
            threads,
            template = ?template.kind(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded local model"
        );
        Ok(Self {
            identity,
            tokenizer,
            template,
            backbone: Mutex::new(backbone),
            pool,
            narrow,
            width: Mutex::new(WidthChooser::default()),
            threads,
            logits_width,
            stop_ids,
            json: OnceLock::new(),
        })
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The chat template in use.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Threads of this model's inference pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Token ids for a raw prompt: BOS first when the vocabulary asks for it.
    fn prompt_ids(&self, prompt: &str, with_bos: bool) -> Result<Vec<u32>, Error> {
        let mut ids = self.tokenizer.encode(prompt)?;
        if with_bos
            && self.tokenizer.add_bos()
            && let Some(bos) = self.tokenizer.bos_id()
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    fn json_constraints(&self) -> Result<Arc<JsonConstraints>, Error> {
        let built = self.json.get_or_init(|| {
            let end = self
                .template
                .end_of_turn()
                .and_then(|t| self.tokenizer.token_id(t))
                .or_else(|| self.stop_ids.first().copied())
                .ok_or_else(|| "the vocabulary has no end-of-text token".to_string())?;
            JsonConstraints::new(&self.tokenizer, self.logits_width, end)
                .map(Arc::new)
                .map_err(|err| err.to_string())
        });
        built.clone().map_err(|reason| Error::Constraint { reason })
    }

    fn run(
        &self,
        prompt_ids: Vec<u32>,
        params: &GenerateParams,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, Error> {
        let constraint = match &params.json_schema {
            Some(schema) => Some(self.json_constraints()?.start(schema)?),
            None => None,
        };
        let mut backbone = self.backbone.lock().map_err(|_| Error::Poisoned)?;
        let mut chooser = self.width.lock().map_err(|_| Error::Poisoned)?;
        let mut forward = |model: &mut dyn Backbone, tokens: &[u32], pos: usize| {
            let pass = || {
                model
                    .forward(tokens, pos)?
                    .to_vec1::<f32>()
                    .context(|| "read logits".to_string())
            };
            match (&self.narrow, tokens.len()) {
                (Some(narrow), 1) => {
                    let width = chooser.pick();
                    let pool = match width {
                        Width::Narrow => narrow,
                        Width::Wide => &self.pool,
                    };
                    let started = Instant::now();
                    let logits = threads::install_awake(pool, pass);
                    chooser.record(width, started.elapsed());
                    logits
                }
                _ => threads::install_awake(&self.pool, pass),
            }
        };
        generate::run(
            backbone.as_mut(),
            &mut forward,
            &self.tokenizer,
            Request {
                prompt_ids,
                params,
                stop_ids: &self.stop_ids,
                context_length: self.identity.context_length,
                constraint,
            },
            on_token,
        )
    }

    /// Runs `tokens` through the model at `index_pos` on the model's pool (benchmarks).
    pub(crate) fn forward_for_bench(&self, tokens: &[u32], index_pos: usize) -> Result<(), Error> {
        let mut backbone = self.backbone.lock().map_err(|_| Error::Poisoned)?;
        let model = backbone.as_mut();
        threads::install_awake(&self.pool, || model.forward(tokens, index_pos).map(|_| ()))
    }
}

impl LanguageModel for LocalModel {
    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn count_tokens(&self, text: &str) -> Result<usize, Error> {
        self.tokenizer.encode(text).map(|ids| ids.len())
    }

    fn generate(
        &self,
        prompt: &str,
        params: &GenerateParams,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, Error> {
        let ids = self.prompt_ids(prompt, true)?;
        self.run(ids, params, on_token)
    }

    fn count_chat_tokens(&self, messages: &[ChatMessage]) -> Result<usize, Error> {
        let rendered = self.template.render(messages);
        self.prompt_ids(&rendered, !self.template.has_prefix())
            .map(|ids| ids.len())
    }

    fn chat(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, Error> {
        let with_bos = !self.template.has_prefix();
        let rendered = self.template.render(messages);
        let ids = self.prompt_ids(&rendered, with_bos)?;
        let budget = crate::summarize::prompt_budget(self.identity.context_length, params);
        if ids.len() <= budget {
            return self.run(ids, params, on_token);
        }
        tracing::warn!(
            prompt_tokens = ids.len(),
            budget,
            "conversation exceeds the context window; summarizing long messages"
        );
        let condensed = crate::summarize::condense_messages(self, messages, params, budget)?;
        let rendered = self.template.render(&condensed);
        let ids = self.prompt_ids(&rendered, with_bos)?;
        if ids.len() > budget {
            return Err(Error::ContextOverflow {
                prompt_tokens: ids.len(),
                reserved: self.identity.context_length - budget,
                context_length: self.identity.context_length,
            });
        }
        let mut generation = self.run(ids, params, on_token)?;
        generation.input_summarized = true;
        Ok(generation)
    }
}

fn logits_width(gguf: &GgufFile) -> Option<usize> {
    ["output.weight", "token_embd.weight"]
        .iter()
        .find_map(|name| gguf.tensor_rows(name))
}

fn identify(
    path: &Path,
    options: &LoadOptions,
    architecture: &str,
    name: Option<String>,
    context_length: usize,
    template: &ChatTemplate,
) -> Result<ModelIdentity, Error> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(io_error)?;
    let modified_unix = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let sha256 = if options.hash_file {
        Some(crate::paths::sha256_file(path)?)
    } else {
        None
    };
    Ok(ModelIdentity {
        architecture: architecture.to_string(),
        name,
        path: path.to_path_buf(),
        file_name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        file_size: metadata.len(),
        modified_unix,
        sha256,
        context_length,
        chat_template: template.kind(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last position's logits for `tokens` at `index_pos`, as bits.
    fn last_logits(model: &LocalModel, tokens: &[u32], index_pos: usize) -> Vec<u32> {
        let mut backbone = model.backbone.lock().expect("model lock");
        let backbone = backbone.as_mut();
        let logits = model
            .pool
            .install(|| backbone.forward(tokens, index_pos))
            .expect("forward");
        let logits: Vec<f32> = logits.to_vec1().expect("f32 logits");
        logits.iter().map(|x| x.to_bits()).collect()
    }

    /// A prompt in one batch (prefill: the kernels' token groups, one attention pass over
    /// all its positions) gives the logits decoding it token by token gives, bit for bit.
    #[test]
    fn a_prompt_under_llama_cpp_s_tile_gives_the_logits_of_decoding_it_token_by_token() {
        let path = crate::default_model_path().expect("the default model (scripts/fetch-model.sh)");
        let text = "diff --git a/src/main.rs b/src/main.rs\n--- a/src/main.rs\n+++ b/src/main.rs\n\
                    @@ -1,3 +1,4 @@\n fn main() {\n-    println!(\"hello\");\n+    let name = \
                    std::env::args().nth(1).unwrap_or_default();\n+    println!(\"hello {name}\");\n }\n";
        for threads in [1, 2] {
            let options = LoadOptions {
                threads: Some(threads),
                ..LoadOptions::default()
            };
            let model = LocalModel::load(&path, options, &mut |_| {}).expect("load");
            let ids = model.tokenizer().encode(text).expect("encode");
            // llama.cpp (and so Cairn) attends differently for batches of 64 tokens or more:
            // the longest prompt whose batch and single tokens take the same path.
            let ids = &ids[..ids.len().min(crate::model::attention_tiled::TILE - 1)];
            assert!(ids.len() > 32, "{} tokens: several token groups", ids.len());
            let batch = last_logits(&model, ids, 0);
            let mut decoded = Vec::new();
            for (position, id) in ids.iter().enumerate() {
                decoded = last_logits(&model, std::slice::from_ref(id), position);
            }
            assert!(
                batch == decoded,
                "{threads} threads: prefill and decoding differ"
            );
        }
    }
}
