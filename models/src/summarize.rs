//! Map-reduce summarization for text longer than the context window: split the text into
//! chunks that fit (on line boundaries), summarize each chunk (map), then summarize the
//! joined partial summaries (reduce), recursing until the input fits. Nothing is cut
//! silently: every part of the input is read by the model once.

use crate::Error;
use crate::api::{GenerateParams, Generation, LanguageModel};
use crate::chat::ChatMessage;

/// Tokens kept free in each chunk's prompt for tokens that merge across the chunk's edges.
const CHUNK_MARGIN: usize = 8;
/// Allowance per message for role markers when condensing a conversation.
const TEMPLATE_OVERHEAD: usize = 16;
/// Maximum recursion depth of the reduce step (each level shrinks the text fourfold).
const MAX_DEPTH: usize = 8;

/// Prompt tokens allowed so that `params.max_tokens` still fit (at most half the window is
/// reserved for the answer).
pub(crate) fn prompt_budget(context_length: usize, params: &GenerateParams) -> usize {
    let reserve = params.max_tokens.clamp(1, (context_length / 2).max(1));
    context_length.saturating_sub(reserve)
}

/// Summarizes `text` following `instruction`; see the module documentation.
pub fn summarize<M: LanguageModel + ?Sized>(
    model: &M,
    text: &str,
    instruction: &str,
    params: &GenerateParams,
) -> Result<Generation, Error> {
    summarize_at(model, text, instruction, params, 0)
}

fn summarize_at<M: LanguageModel + ?Sized>(
    model: &M,
    text: &str,
    instruction: &str,
    params: &GenerateParams,
    depth: usize,
) -> Result<Generation, Error> {
    let context = model.identity().context_length;
    let budget = prompt_budget(context, params);
    let map_instruction = format!("{instruction} The text is one part of a longer text.");
    // Exact cost of the template, instruction and fences around a chunk, plus a margin for
    // tokens merging across the chunk's edges.
    let overhead = model.count_chat_tokens(&[prompt(&map_instruction, "")])? + CHUNK_MARGIN;
    let chunk_budget = budget.saturating_sub(overhead);
    if chunk_budget < 16 {
        return Err(Error::ContextOverflow {
            prompt_tokens: overhead,
            reserved: context - budget,
            context_length: context,
        });
    }
    if model.count_chat_tokens(&[prompt(instruction, text)])? <= budget {
        let mut generation = model.chat(&[prompt(instruction, text)], params, &mut |_| {})?;
        generation.input_summarized = depth > 0;
        return Ok(generation);
    }
    if depth >= MAX_DEPTH {
        return Err(Error::ContextOverflow {
            prompt_tokens: model.count_tokens(text)?,
            reserved: context - budget,
            context_length: context,
        });
    }
    let chunks = split_into_chunks(model, text, chunk_budget)?;
    tracing::info!(
        chunks = chunks.len(),
        depth,
        "summarizing long input map-reduce style"
    );
    // Each partial summary gets at most a quarter of a chunk, so every level shrinks the
    // text at least fourfold.
    let map_params = GenerateParams {
        max_tokens: params.max_tokens.min(chunk_budget / 4).max(8),
        json_schema: None,
        ..params.clone()
    };
    let total = chunks.len();
    let mut partials = Vec::with_capacity(total);
    for (index, chunk) in chunks.iter().enumerate() {
        tracing::debug!(part = index + 1, total, "summarizing one part");
        let partial = model.chat(&[prompt(&map_instruction, chunk)], &map_params, &mut |_| {})?;
        partials.push(partial.text.trim().to_string());
    }
    summarize_at(model, &partials.join("\n"), instruction, params, depth + 1)
}

/// The instruction, then the text fenced as a code block (small models then treat the text
/// as material to describe instead of continuing it).
fn prompt(instruction: &str, text: &str) -> ChatMessage {
    let newline = if text.ends_with('\n') { "" } else { "\n" };
    ChatMessage::user(format!("{instruction}\n\n```\n{text}{newline}```"))
}

/// Splits `text` into pieces of at most `budget` tokens, on line boundaries where possible.
fn split_into_chunks<M: LanguageModel + ?Sized>(
    model: &M,
    text: &str,
    budget: usize,
) -> Result<Vec<String>, Error> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut current_tokens = 0;
    for line in text.split_inclusive('\n') {
        let line_tokens = model.count_tokens(line)?;
        if line_tokens > budget {
            // A single huge line: split it by characters.
            if !current.is_empty() {
                chunks.push(std::mem::take(&mut current));
                current_tokens = 0;
            }
            let chars: Vec<char> = line.chars().collect();
            let per_piece = (chars.len() * budget / line_tokens.max(1)).max(1);
            chunks.extend(
                chars
                    .chunks(per_piece)
                    .map(|c| c.iter().collect::<String>()),
            );
            continue;
        }
        if current_tokens + line_tokens > budget && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
            current_tokens = 0;
        }
        current.push_str(line);
        current_tokens += line_tokens;
    }
    if !current.trim().is_empty() {
        chunks.push(current);
    }
    Ok(chunks)
}

/// Shrinks a conversation to fit `budget` prompt tokens by summarizing its longest
/// messages (the last user message is summarized only when nothing else is left).
pub(crate) fn condense_messages<M: LanguageModel + ?Sized>(
    model: &M,
    messages: &[ChatMessage],
    params: &GenerateParams,
    budget: usize,
) -> Result<Vec<ChatMessage>, Error> {
    let mut messages = messages.to_vec();
    let sizes: Vec<usize> = messages
        .iter()
        .map(|m| model.count_tokens(&m.content))
        .collect::<Result<_, _>>()?;
    let total: usize = sizes.iter().sum::<usize>() + TEMPLATE_OVERHEAD * messages.len();
    let mut excess = total.saturating_sub(budget);
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by(|a, b| sizes[*b].cmp(&sizes[*a]));
    for index in order {
        if excess == 0 {
            break;
        }
        // Aim for the size that removes the excess, within a fair share of the budget.
        let target = sizes[index].saturating_sub(excess).max(32);
        let summary_params = GenerateParams {
            json_schema: None,
            stop: Vec::new(),
            max_tokens: target.min(budget / (2 * messages.len().max(1))).max(16),
            ..params.clone()
        };
        let summary = summarize(
            model,
            &messages[index].content,
            "Summarize the following text, keeping every fact needed to act on it:",
            &summary_params,
        )?;
        let new_size = model.count_tokens(&summary.text)?;
        excess = excess.saturating_sub(sizes[index].saturating_sub(new_size));
        messages[index].content = summary.text;
    }
    Ok(messages)
}
