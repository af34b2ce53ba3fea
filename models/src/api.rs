//! The public model interface the engine holds as `Arc<dyn LanguageModel>`, and the plain
//! data types that go in and out of it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::chat::{ChatMessage, ChatTemplateKind};

/// A loaded language model: object-safe, shareable between threads. Calls block the calling
/// thread while the model runs; async callers use `spawn_blocking`. Concurrent calls on one
/// model are serialized (the KV cache is behind a mutex).
pub trait LanguageModel: Send + Sync {
    /// What model this is.
    fn identity(&self) -> &ModelIdentity;

    /// Number of tokens `text` encodes to (no BOS, special tokens parsed).
    fn count_tokens(&self, text: &str) -> Result<usize, Error>;

    /// Continues a raw prompt. `on_token` receives the text as it is produced (never text
    /// that is later cut by a stop sequence).
    fn generate(
        &self,
        prompt: &str,
        params: &GenerateParams,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, Error>;

    /// Answers a conversation, formatted with the model's chat template. Messages too long
    /// for the context window are summarized map-reduce style first (see
    /// [`crate::summarize`]); `Generation::input_summarized` then says so.
    fn chat(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, Error>;

    /// Number of prompt tokens `messages` take once formatted with the chat template
    /// (the default adds a rough allowance per message for the role markers).
    fn count_chat_tokens(&self, messages: &[ChatMessage]) -> Result<usize, Error> {
        let mut total = 0;
        for message in messages {
            total += self.count_tokens(&message.content)? + 8;
        }
        Ok(total + 32)
    }

    /// Summarizes `text` following `instruction` ("Summarize this diff in one sentence."),
    /// chunking and combining when it does not fit the context window.
    fn summarize(
        &self,
        text: &str,
        instruction: &str,
        params: &GenerateParams,
    ) -> Result<Generation, Error> {
        crate::summarize::summarize(self, text, instruction, params)
    }
}

/// Sampling and stopping parameters. `Default` is greedy decoding of up to 256 tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateParams {
    /// Maximum number of tokens to generate.
    pub max_tokens: usize,
    /// 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`
    /// (1.0 disables it).
    pub top_p: f64,
    /// Keep only the `top_k` most likely tokens (0 disables it).
    pub top_k: usize,
    /// Penalty > 1 for tokens seen in the last `repetition_window` tokens (1.0 disables it).
    pub repetition_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repetition_window: usize,
    /// Seed of the sampler's random generator: same seed, same output.
    pub seed: u64,
    /// Generation stops before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// When set, the output is constrained to JSON valid against this JSON Schema.
    pub json_schema: Option<serde_json::Value>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            repetition_window: 64,
            seed: 0,
            stop: Vec::new(),
            json_schema: None,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence or end-of-turn token, or the JSON document was
    /// complete.
    EndOfText,
    /// A stop sequence was produced (it is not part of the text).
    StopSequence,
    /// `max_tokens` was reached.
    MaxTokens,
    /// The context window is full.
    ContextFull,
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub text: String,
    /// The generated token ids (stop-sequence text included, end token excluded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
    /// True when over-long input was summarized to fit the context window.
    pub input_summarized: bool,
}

/// Identifies a loaded model (for logs, caches and the run history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// GGUF `general.architecture` (`llama`, `qwen2`, ...).
    pub architecture: String,
    /// GGUF `general.name`, when present.
    pub name: Option<String>,
    pub path: PathBuf,
    pub file_name: String,
    pub file_size: u64,
    /// Modification time, seconds since the Unix epoch (0 when unknown).
    pub modified_unix: u64,
    /// SHA-256 of the file, hex, when [`LoadOptions::hash_file`] was set.
    pub sha256: Option<String>,
    /// Context window in tokens (the model's, or the smaller one asked for at load).
    pub context_length: usize,
    pub chat_template: ChatTemplateKind,
}

/// How to load a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Threads of the model's pool (`None`: one per core). Decoding the formats without a
    /// Cairn kernel uses candle's process-wide pool, sized by `CANDLE_NUM_THREADS`; see
    /// [`crate::threads`].
    pub threads: Option<usize>,
    /// Use a smaller context window than the model's (tests, memory).
    pub context_length: Option<usize>,
    /// Compute the file's SHA-256 for [`ModelIdentity::sha256`] (~0.3 s per 100 MB).
    pub hash_file: bool,
}

/// Progress of [`crate::LocalModel::load`], for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LoadProgress {
    pub stage: LoadStage,
    /// Units done within the stage (layers for `Weights`).
    pub done: usize,
    pub total: usize,
}

/// Stages of loading, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadStage {
    ReadingHeader,
    Tokenizer,
    Weights,
    Ready,
}
