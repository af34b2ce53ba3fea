//! Prints `cairn_models::bench::run` as JSON: `cargo run -p cairn-models --release --example
//! bench -- [THREADS] [MODEL]` (defaults: 2 threads, the default model).

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let threads = args.next().map(|t| t.parse()).transpose()?.unwrap_or(2);
    let path = match args.next() {
        Some(path) => path.into(),
        None => cairn_models::default_model_path()?,
    };
    let report = cairn_models::bench::run(&path, threads)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
