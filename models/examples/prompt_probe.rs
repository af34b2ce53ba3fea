//! Temporary probe (not committed).
use cairn_models::*;
fn main() -> anyhow::Result<()> {
    let model = LocalModel::load(&default_model_path()?, LoadOptions::default(), &mut |_| {})?;
    let diff = std::fs::read_to_string("/tmp/exp.diff")?;
    let params = GenerateParams { max_tokens: 60, ..GenerateParams::default() };
    let sys = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
    let variants: Vec<Vec<ChatMessage>> = vec![
        vec![ChatMessage::system(sys), ChatMessage::user(format!("Summarize this git diff in one sentence.\n\n```\n{diff}```"))],
        vec![ChatMessage::system(sys), ChatMessage::user(format!("Summarize this git diff in one sentence:\n\n```\n{diff}```"))],
        vec![ChatMessage::system("You are a helpful assistant that summarizes text."), ChatMessage::user(format!("Summarize this git diff in one sentence.\n\n```diff\n{diff}```"))],
        vec![ChatMessage::system(sys), ChatMessage::user(format!("This is part 2 of 5 of a longer text. Summarize this git diff in one sentence.\n\n```\n{diff}```"))],
        vec![ChatMessage::system(sys), ChatMessage::user(format!("Summarize this git diff in one sentence. The text is one part of a longer text.\n\n```\n{diff}```"))],
    ];
    for v in variants {
        let g = model.chat(&v, &params, &mut |_| {})?;
        println!("---\n{:?}", g.text);
    }
    Ok(())
}
