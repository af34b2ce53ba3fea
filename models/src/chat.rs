//! Chat templates as data: each family's turn format in [`TEMPLATES`]. The template is picked
//! by looking for its marker in the GGUF's `tokenizer.chat_template`, then in the vocabulary,
//! then falling back to the family's default (see [`crate::family`]).

use serde::{Deserialize, Serialize};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// The chat formats Cairn knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatTemplateKind {
    /// `<|im_start|>role ... <|im_end|>`: SmolLM2, Qwen.
    ChatMl,
    /// `<|start_header_id|>role<|end_header_id|> ... <|eot_id|>`: Llama 3.
    Llama3,
    /// `<start_of_turn>user ... <end_of_turn>`: Gemma (system text goes into the first user turn).
    Gemma,
    /// `<|user|> ... <|end|>`: Phi-3.
    Phi3,
    /// `role: text` lines, for models without a known template.
    Plain,
}

/// How system messages are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SystemMode {
    /// As a turn of their own with role name `system`.
    OwnTurn,
    /// Prepended to the first user message.
    MergeIntoFirstUser,
}

/// One row of the template table. `turn` contains `{role}` and `{content}`.
struct TemplateSpec {
    kind: ChatTemplateKind,
    /// Text that identifies the format in a Jinja template or a vocabulary.
    marker: &'static str,
    /// Literal text at the start of every conversation (e.g. `<|begin_of_text|>`).
    prefix: &'static str,
    turn: &'static str,
    assistant_role: &'static str,
    system: SystemMode,
    /// The token that ends a turn (a stop token for generation), if any.
    end_of_turn: Option<&'static str>,
}

const TEMPLATES: &[TemplateSpec] = &[
    TemplateSpec {
        kind: ChatTemplateKind::ChatMl,
        marker: "<|im_start|>",
        prefix: "",
        turn: "<|im_start|>{role}\n{content}<|im_end|>\n",
        assistant_role: "assistant",
        system: SystemMode::OwnTurn,
        end_of_turn: Some("<|im_end|>"),
    },
    TemplateSpec {
        kind: ChatTemplateKind::Llama3,
        marker: "<|start_header_id|>",
        prefix: "<|begin_of_text|>",
        turn: "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        assistant_role: "assistant",
        system: SystemMode::OwnTurn,
        end_of_turn: Some("<|eot_id|>"),
    },
    TemplateSpec {
        kind: ChatTemplateKind::Gemma,
        marker: "<start_of_turn>",
        prefix: "<bos>",
        turn: "<start_of_turn>{role}\n{content}<end_of_turn>\n",
        assistant_role: "model",
        system: SystemMode::MergeIntoFirstUser,
        end_of_turn: Some("<end_of_turn>"),
    },
    TemplateSpec {
        kind: ChatTemplateKind::Phi3,
        marker: "<|assistant|>",
        prefix: "",
        turn: "<|{role}|>\n{content}<|end|>\n",
        assistant_role: "assistant",
        system: SystemMode::OwnTurn,
        end_of_turn: Some("<|end|>"),
    },
    TemplateSpec {
        kind: ChatTemplateKind::Plain,
        marker: "\u{0}plain",
        prefix: "",
        turn: "{role}: {content}\n\n",
        assistant_role: "assistant",
        system: SystemMode::OwnTurn,
        end_of_turn: None,
    },
];

/// A chat template chosen for one model.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    spec: &'static TemplateSpec,
    /// The system prompt the model's own template adds when a conversation has none
    /// (SmolLM2: "You are a helpful AI assistant named SmolLM, ..."), read from the GGUF.
    default_system: Option<String>,
}

impl std::fmt::Debug for TemplateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.kind)
    }
}

impl ChatTemplate {
    /// The template for `kind`.
    pub fn new(kind: ChatTemplateKind) -> Self {
        let spec = TEMPLATES
            .iter()
            .find(|t| t.kind == kind)
            .unwrap_or(&TEMPLATES[TEMPLATES.len() - 1]);
        Self {
            spec,
            default_system: None,
        }
    }

    /// Picks the template from the GGUF's Jinja template text, then from the vocabulary
    /// (`has_token`), then `fallback`.
    pub(crate) fn detect(
        jinja: Option<&str>,
        has_token: impl Fn(&str) -> bool,
        fallback: ChatTemplateKind,
    ) -> Self {
        let by_jinja = jinja.and_then(|j| TEMPLATES.iter().find(|t| j.contains(t.marker)));
        let by_vocab = || TEMPLATES.iter().find(|t| has_token(t.marker));
        let spec = match by_jinja.or_else(by_vocab) {
            Some(spec) => spec,
            None => Self::new(fallback).spec,
        };
        Self {
            spec,
            default_system: jinja.and_then(|j| default_system_prompt(spec, j)),
        }
    }

    /// The default system prompt taken from the model's template, if any.
    pub fn default_system(&self) -> Option<&str> {
        self.default_system.as_deref()
    }

    pub fn kind(&self) -> ChatTemplateKind {
        self.spec.kind
    }

    /// The end-of-turn token text, used as an extra stop token.
    pub fn end_of_turn(&self) -> Option<&'static str> {
        self.spec.end_of_turn
    }

    /// Whether the rendered text starts with its own BOS text (so no BOS id is prepended).
    pub(crate) fn has_prefix(&self) -> bool {
        !self.spec.prefix.is_empty()
    }

    /// Renders `messages` followed by the opening of the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage]) -> String {
        let spec = self.spec;
        let mut out = String::from(spec.prefix);
        let mut pending_system: Vec<&str> = Vec::new();
        let default_system = match (&self.default_system, messages.first()) {
            (Some(text), Some(first)) if first.role != Role::System => {
                Some(ChatMessage::system(text.clone()))
            }
            _ => None,
        };
        for message in default_system.iter().chain(messages) {
            let (role, content) = match (message.role, spec.system) {
                (Role::System, SystemMode::MergeIntoFirstUser) => {
                    pending_system.push(&message.content);
                    continue;
                }
                (Role::System, SystemMode::OwnTurn) => ("system", message.content.clone()),
                (Role::User, _) if !pending_system.is_empty() => {
                    let mut merged = pending_system.join("\n\n");
                    merged.push_str("\n\n");
                    merged.push_str(&message.content);
                    pending_system.clear();
                    ("user", merged)
                }
                (Role::User, _) => ("user", message.content.clone()),
                (Role::Assistant, _) => (spec.assistant_role, message.content.clone()),
            };
            out.push_str(
                &spec
                    .turn
                    .replace("{role}", role)
                    .replace("{content}", &content),
            );
        }
        if !pending_system.is_empty() {
            let content = pending_system.join("\n\n");
            out.push_str(
                &spec
                    .turn
                    .replace("{role}", "user")
                    .replace("{content}", &content),
            );
        }
        let opening = spec.turn.replace("{role}", spec.assistant_role);
        let opening = opening.split("{content}").next().unwrap_or_default();
        out.push_str(opening);
        out
    }
}

/// Finds a literal system turn in a Jinja chat template, e.g.
/// `'<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>'`, and
/// returns its text. Turns built from variables (quotes, braces, `+`) are skipped.
fn default_system_prompt(spec: &TemplateSpec, jinja: &str) -> Option<String> {
    let end = spec.end_of_turn?;
    let turn = spec.turn.replace("{role}", "system");
    let open = turn.split("{content}").next()?;
    let escaped_open = open.replace('\n', "\\n");
    for candidate_open in [open, escaped_open.as_str()] {
        for (start, _) in jinja.match_indices(candidate_open) {
            let rest = &jinja[start + candidate_open.len()..];
            let Some(stop) = rest.find(end) else {
                continue;
            };
            let text = &rest[..stop];
            let literal = !text.is_empty()
                && !text.contains(['{', '}', '\'', '"', '+', '\n'])
                && !text.contains("\\n");
            if literal {
                return Some(text.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_matches_the_reference_prompt() {
        let t = ChatTemplate::new(ChatTemplateKind::ChatMl);
        let text = t.render(&[ChatMessage::user("What is the capital of France?")]);
        assert_eq!(
            text,
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn gemma_merges_system_into_first_user_turn() {
        let t = ChatTemplate::new(ChatTemplateKind::Gemma);
        let text = t.render(&[ChatMessage::system("Be brief."), ChatMessage::user("Hi")]);
        assert_eq!(
            text,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn llama3_has_headers() {
        let t = ChatTemplate::new(ChatTemplateKind::Llama3);
        let text = t.render(&[ChatMessage::system("S"), ChatMessage::user("U")]);
        assert_eq!(
            text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn detection_prefers_the_jinja_template() {
        let t = ChatTemplate::detect(
            Some("{{ '<|im_start|>' + message['role'] }}"),
            |_| false,
            ChatTemplateKind::Plain,
        );
        assert_eq!(t.kind(), ChatTemplateKind::ChatMl);
        let t = ChatTemplate::detect(
            None,
            |tok| tok == "<start_of_turn>",
            ChatTemplateKind::Plain,
        );
        assert_eq!(t.kind(), ChatTemplateKind::Gemma);
        let t = ChatTemplate::detect(None, |_| false, ChatTemplateKind::Phi3);
        assert_eq!(t.kind(), ChatTemplateKind::Phi3);
    }

    #[test]
    fn default_system_prompt_comes_from_the_jinja_template() {
        let jinja = "{% for message in messages %}{% if loop.first and messages[0]['role'] != \
                     'system' %}{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}\
                     {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'}}";
        let t = ChatTemplate::detect(Some(jinja), |_| false, ChatTemplateKind::Plain);
        assert_eq!(t.default_system(), Some("You are SmolLM"));
        assert_eq!(
            t.render(&[ChatMessage::user("Hi")]),
            "<|im_start|>system\nYou are SmolLM<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        let own = t.render(&[ChatMessage::system("S"), ChatMessage::user("Hi")]);
        assert!(!own.contains("SmolLM"));
    }
}
