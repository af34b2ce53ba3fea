//! `cairn model info|tokenize|generate`: check a GGUF file before pointing `CAIRN_MODEL` at
//! it. `info` reads only the header (architecture, whether Cairn runs it, sizes, storage
//! formats); `tokenize` builds only the tokenizer; `generate` loads the model and continues a
//! prompt (greedy by default, or sampled with a seed), streaming the text and reporting speed.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use cairn_models::{ChatMessage, GenerateParams, LanguageModel, LoadOptions, LocalModel};

#[derive(clap::Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(clap::Subcommand)]
pub enum ModelCommand {
    /// The file's metadata, architecture support, size and storage formats (no weights read).
    Info {
        /// A GGUF file (default: CAIRN_MODEL or the model cache).
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The token ids (and pieces) the model's tokenizer makes of TEXT.
    Tokenize {
        text: String,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Continue PROMPT (or answer it as a chat message with `--chat`), with speed.
    Generate {
        prompt: String,
        #[arg(long)]
        model: Option<PathBuf>,
        /// Format PROMPT as a user message with the model's chat template.
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// 0 is greedy decoding.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Prompt-processing threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

fn model_path(model: &Option<PathBuf>) -> Result<PathBuf> {
    let path = match model {
        Some(path) => path.clone(),
        None => cairn_models::default_model_path()?,
    };
    if !path.is_file() {
        return Err(super::Invalid(format!("{}: no such model file", path.display())).into());
    }
    Ok(path)
}

/// A file the user named that cannot be read as a model is a mistake in the request (exit 2).
fn not_a_model(error: cairn_models::Error) -> anyhow::Error {
    match error {
        cairn_models::Error::InvalidGguf { .. } | cairn_models::Error::Metadata { .. } => {
            super::Invalid(error.to_string()).into()
        }
        other => other.into(),
    }
}

pub async fn model(args: &ModelArgs) -> Result<()> {
    match &args.command {
        ModelCommand::Info { model, json } => {
            let info = cairn_models::inspect::inspect(&model_path(model)?).map_err(not_a_model)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", render_info(&info));
            }
            if !info.supported {
                return Err(super::Invalid(format!(
                    "{}: architecture `{}` is not supported; Cairn runs {}",
                    info.path.display(),
                    info.architecture,
                    info.supported_architectures
                ))
                .into());
            }
            Ok(())
        }
        ModelCommand::Tokenize { text, model, json } => {
            let tokenizer =
                cairn_models::load_tokenizer(&model_path(model)?).map_err(not_a_model)?;
            let ids = tokenizer.encode(text)?;
            let mut pieces = Vec::with_capacity(ids.len());
            for id in &ids {
                pieces.push(tokenizer.decode(std::slice::from_ref(id))?);
            }
            if *json {
                let tokens: Vec<_> = ids
                    .iter()
                    .zip(&pieces)
                    .map(|(id, piece)| serde_json::json!({ "id": id, "piece": piece }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                println!("{} tokens", ids.len());
                for (id, piece) in ids.iter().zip(&pieces) {
                    println!("{id:>8}  {piece:?}");
                }
            }
            Ok(())
        }
        ModelCommand::Generate {
            prompt,
            model,
            chat,
            max_tokens,
            temperature,
            seed,
            threads,
            json,
        } => {
            if !temperature.is_finite() || *temperature < 0.0 {
                return Err(super::Invalid(format!(
                    "--temperature {temperature}: must be 0 (greedy) or a positive number"
                ))
                .into());
            }
            let path = model_path(model)?;
            let options = LoadOptions {
                threads: *threads,
                ..LoadOptions::default()
            };
            let (prompt, chat, json) = (prompt.clone(), *chat, *json);
            let params = GenerateParams {
                max_tokens: *max_tokens,
                temperature: *temperature,
                seed: *seed,
                ..GenerateParams::default()
            };
            tokio::task::spawn_blocking(move || {
                generate(&path, options, &prompt, chat, &params, json)
            })
            .await?
        }
    }
}

fn generate(
    path: &std::path::Path,
    options: LoadOptions,
    prompt: &str,
    chat: bool,
    params: &GenerateParams,
    json: bool,
) -> Result<()> {
    let started = Instant::now();
    let model = LocalModel::load(path, options, &mut |_| {})?;
    let load_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut stdout = std::io::stdout();
    let mut on_token = |text: &str| {
        if !json {
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
        }
    };
    let generation = if chat {
        model.chat(&[ChatMessage::user(prompt)], params, &mut on_token)?
    } else {
        model.generate(prompt, params, &mut on_token)?
    };
    let seconds = started.elapsed().as_secs_f64();
    let rate = generation.completion_tokens as f64 / seconds.max(1e-9);
    if json {
        let report = serde_json::json!({
            "model": path.display().to_string(),
            "text": generation.text,
            "token_ids": generation.token_ids,
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "finish_reason": generation.finish_reason,
            "load_seconds": load_seconds,
            "generate_seconds": seconds,
            "tokens_per_second": rate,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!();
        eprintln!(
            "{} prompt tokens, {} generated ({:?}) in {seconds:.2}s: {rate:.1} tokens/s; loaded in {load_seconds:.2}s",
            generation.prompt_tokens, generation.completion_tokens, generation.finish_reason
        );
    }
    Ok(())
}

fn render_info(info: &cairn_models::inspect::ModelInfo) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let opt = |v: Option<u32>| v.map_or("—".to_string(), |v| v.to_string());
    let _ = writeln!(
        out,
        "file          {} ({:.1} MB)",
        info.path.display(),
        info.file_bytes as f64 / 1e6
    );
    let _ = writeln!(out, "name          {}", info.name.as_deref().unwrap_or("—"));
    let _ = writeln!(
        out,
        "architecture  {} ({})",
        info.architecture,
        if info.supported {
            "supported"
        } else {
            "NOT supported"
        }
    );
    let _ = writeln!(
        out,
        "parameters    {:.1} M in {} tensors",
        info.parameters as f64 / 1e6,
        info.tensors
    );
    let _ = writeln!(out, "context       {} tokens", opt(info.context_length));
    let _ = writeln!(
        out,
        "shape         {} layers, width {}, {} heads ({} key/value)",
        opt(info.layers),
        opt(info.embedding_length),
        opt(info.attention_heads),
        opt(info.kv_heads)
    );
    let _ = writeln!(
        out,
        "tokenizer     {} with {} tokens; chat template {}",
        info.tokenizer.as_deref().unwrap_or("—"),
        info.vocab_size.map_or("—".to_string(), |v| v.to_string()),
        if info.has_chat_template {
            "in the file"
        } else {
            "none (the family's default is used)"
        }
    );
    for (format, used) in &info.formats {
        let share = used.parameters as f64 / info.parameters.max(1) as f64 * 100.0;
        let _ = writeln!(
            out,
            "format {format:<7}{:>5} tensors, {:>5.1}% of weights",
            used.tensors, share
        );
    }
    out
}
