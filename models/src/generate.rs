//! The generation loop: prefill the prompt, then pick one token at a time (optionally under a
//! JSON constraint) until an end token, a stop sequence, `max_tokens` or a full context.
//! Streamed text never includes text that a stop sequence later cuts off.

use crate::Error;
use crate::api::{FinishReason, GenerateParams, Generation};
use crate::constrained::{JsonConstraint, Step};
use crate::model::Backbone;
use crate::sampling::Sampler;
use crate::tokenizer::TextTokenizer;

/// Everything one generation needs besides the model.
pub(crate) struct Request<'a> {
    pub prompt_ids: Vec<u32>,
    pub params: &'a GenerateParams,
    pub stop_ids: &'a [u32],
    pub context_length: usize,
    pub constraint: Option<JsonConstraint>,
}

/// Runs one forward pass; the caller decides which threads run it.
pub(crate) type Forward<'a> =
    dyn FnMut(&mut dyn Backbone, &[u32], usize) -> Result<Vec<f32>, Error> + 'a;

pub(crate) fn run(
    backbone: &mut dyn Backbone,
    forward: &mut Forward<'_>,
    tokenizer: &TextTokenizer,
    request: Request<'_>,
    on_token: &mut dyn FnMut(&str),
) -> Result<Generation, Error> {
    let Request {
        prompt_ids,
        params,
        stop_ids,
        context_length,
        mut constraint,
    } = request;
    let prompt_tokens = prompt_ids.len();
    if prompt_tokens == 0 {
        return Err(Error::InvalidParams {
            name: "prompt",
            reason: "the prompt encodes to no tokens".to_string(),
        });
    }
    if prompt_tokens >= context_length {
        return Err(Error::ContextOverflow {
            prompt_tokens,
            reserved: 1,
            context_length,
        });
    }
    let mut sampler = Sampler::new(params)?;
    let mut stream = StopStream::new(&params.stop);
    let mut history = prompt_ids;
    let mut completion: Vec<u32> = Vec::new();
    let mut logits = forward(backbone, &history, 0)?;

    let finish = loop {
        if completion.len() >= params.max_tokens {
            break FinishReason::MaxTokens;
        }
        if history.len() >= context_length {
            break FinishReason::ContextFull;
        }
        let (token, document_complete) = match constraint.as_mut() {
            Some(constraint) => {
                let token = match constraint.next()? {
                    Step::Stop => None,
                    Step::Sample(allowed) => Some(
                        sampler
                            .sample(&mut logits, &history, Some(&*allowed))
                            .ok_or_else(|| Error::Constraint {
                                reason: "no token can continue the document".to_string(),
                            })?,
                    ),
                };
                let Some(token) = token else {
                    break FinishReason::EndOfText;
                };
                (token, constraint.commit(token)?)
            }
            None => match sampler.sample(&mut logits, &history, None) {
                Some(token) => (token, false),
                None => break FinishReason::EndOfText,
            },
        };
        if stop_ids.contains(&token) {
            break FinishReason::EndOfText;
        }
        completion.push(token);
        history.push(token);
        let text = tokenizer.decode(&completion)?;
        if let Some(cut) = stream.push(&text, on_token) {
            tracing::trace!(cut, "stop sequence reached");
            break FinishReason::StopSequence;
        }
        if document_complete {
            break FinishReason::EndOfText;
        }
        logits = forward(backbone, &[token], history.len() - 1)?;
    };
    if constraint.is_some() && matches!(finish, FinishReason::MaxTokens | FinishReason::ContextFull)
    {
        return Err(Error::Constraint {
            reason: format!(
                "the JSON document was not complete after {} tokens; raise max_tokens or bound \
                 string and array lengths in the schema",
                completion.len()
            ),
        });
    }
    let text = tokenizer.decode(&completion)?;
    let text = stream.finish(&text, finish == FinishReason::StopSequence, on_token);
    Ok(Generation {
        text,
        token_ids: completion.clone(),
        prompt_tokens,
        completion_tokens: completion.len(),
        finish_reason: finish,
        input_summarized: false,
    })
}

/// Tracks what has been streamed and where a stop sequence starts.
struct StopStream<'a> {
    stops: &'a [String],
    emitted: usize,
    cut: Option<usize>,
}

impl<'a> StopStream<'a> {
    fn new(stops: &'a [String]) -> Self {
        Self {
            stops,
            emitted: 0,
            cut: None,
        }
    }

    /// Streams the new safe part of `text`; returns the cut position when a stop sequence
    /// appeared.
    fn push(&mut self, text: &str, on_token: &mut dyn FnMut(&str)) -> Option<usize> {
        let cut = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min();
        if let Some(cut) = cut {
            self.cut = Some(cut);
            self.emit_to(text, cut, on_token);
            return Some(cut);
        }
        // Hold back a trailing partial UTF-8 character and any suffix that could still
        // grow into a stop sequence.
        let mut safe = text.len();
        if text.ends_with('\u{FFFD}') {
            safe = text.trim_end_matches('\u{FFFD}').len();
        }
        let base = safe;
        for stop in self.stops {
            for (len, _) in stop.char_indices().skip(1) {
                if text[..base].ends_with(&stop[..len]) {
                    safe = safe.min(base - len);
                }
            }
        }
        self.emit_to(text, safe, on_token);
        None
    }

    fn emit_to(&mut self, text: &str, end: usize, on_token: &mut dyn FnMut(&str)) {
        let mut end = end.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if end > self.emitted {
            if let Some(piece) = text.get(self.emitted..end) {
                on_token(piece);
            }
            self.emitted = end;
        }
    }

    /// Streams whatever is left and returns the final text.
    fn finish(&mut self, text: &str, stopped: bool, on_token: &mut dyn FnMut(&str)) -> String {
        let end = match (stopped, self.cut) {
            (true, Some(cut)) => cut,
            _ => text.len(),
        };
        self.emit_to(text, end, on_token);
        text[..end.min(text.len())].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sequences_are_never_streamed() {
        let stops = vec!["\nUser:".to_string()];
        let mut stream = StopStream::new(&stops);
        let mut out = String::new();
        let mut sink = |s: &str| out.push_str(s);
        assert_eq!(stream.push("Hello", &mut sink), None);
        assert_eq!(stream.push("Hello\nUs", &mut sink), None);
        assert_eq!(stream.push("Hello\nUser: hi", &mut sink), Some(5));
        let text = stream.finish("Hello\nUser: hi", true, &mut sink);
        assert_eq!(text, "Hello");
        assert_eq!(out, "Hello");
    }

    #[test]
    fn partial_characters_are_held_back() {
        let mut stream = StopStream::new(&[]);
        let mut out = String::new();
        let mut sink = |s: &str| out.push_str(s);
        stream.push("ab\u{FFFD}", &mut sink);
        stream.push("ab\u{1F680}", &mut sink);
        stream.finish("ab\u{1F680}", false, &mut sink);
        assert_eq!(out, "ab\u{1F680}");
    }
}
