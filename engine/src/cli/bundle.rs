//! `cairn bundle --out cairn-bundle.tar`: everything an air-gapped machine needs in one file —
//! this `cairn` binary, the configured model (any GGUF), the workflow templates and the
//! default pipeline, an install note, and `MANIFEST.sha256` (`sha256sum -c` format) that
//! `cairn doctor` checks after unpacking.
//!
//! Layout inside the tar (under `cairn-bundle/`): `bin/cairn`, `models/<file>.gguf`,
//! `templates/*.yml`, `workflows/ai-pipeline.yaml`, `INSTALL.md`, `MANIFEST.sha256`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::settings::Settings;

/// The top directory of the bundle.
pub const ROOT: &str = "cairn-bundle";
/// The checksum list, one `<sha256>  <path>` line per file, paths relative to [`ROOT`].
pub const MANIFEST: &str = "MANIFEST.sha256";

/// Shipped inside the binary, so a bundle can be made from an installed `cairn` alone.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "templates/github-cairn-risk.yml",
        include_str!("../../../templates/github-cairn-risk.yml"),
    ),
    (
        "templates/gitea-cairn-risk.yml",
        include_str!("../../../templates/gitea-cairn-risk.yml"),
    ),
    (
        "workflows/ai-pipeline.yaml",
        include_str!("../../../workflows/ai-pipeline.yaml"),
    ),
];

#[derive(clap::Args)]
pub struct BundleArgs {
    /// The tar file to write.
    #[arg(long, value_name = "FILE", default_value = "cairn-bundle.tar")]
    pub out: PathBuf,
    /// The model to pack (default: the configured one, `llm.local.model` or `CAIRN_MODEL`,
    /// else the cache `scripts/fetch-model.sh` fills).
    #[arg(long, value_name = "GGUF")]
    pub model: Option<PathBuf>,
}

pub fn bundle(home: Option<PathBuf>, args: &BundleArgs) -> Result<()> {
    let settings = Settings::resolve(home, None)?;
    let binary = std::env::current_exe().context("failed to find this cairn binary")?;
    let model = match &args.model {
        Some(model) => model.clone(),
        None => configured_model(&settings)?,
    };
    check_gguf(&model)?;
    let model_name = model
        .file_name()
        .and_then(|name| name.to_str())
        .context("the model path has no file name")?
        .to_owned();

    // Written beside the target and renamed at the end: a failed bundle leaves no half file.
    let partial = args.out.with_extension("tar.partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("failed to create {}", partial.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let mut manifest = String::new();
    let mut add_file =
        |tar: &mut tar::Builder<_>, source: &Path, name: &str, mode: u32| -> Result<()> {
            let digest = sha256_file(source)?;
            let mut header = tar::Header::new_gnu();
            let metadata = std::fs::metadata(source)
                .with_context(|| format!("failed to read {}", source.display()))?;
            header.set_size(metadata.len());
            header.set_mode(mode);
            header.set_mtime(0);
            let file = std::fs::File::open(source)
                .with_context(|| format!("failed to open {}", source.display()))?;
            tar.append_data(&mut header, format!("{ROOT}/{name}"), file)
                .with_context(|| format!("failed to add {name} to the bundle"))?;
            manifest.push_str(&format!("{digest}  {name}\n"));
            Ok(())
        };
    add_file(&mut tar, &binary, "bin/cairn", 0o755)?;
    add_file(&mut tar, &model, &format!("models/{model_name}"), 0o644)?;
    let install = install_note(&model_name);
    let mut texts: Vec<(&str, String)> = EMBEDDED
        .iter()
        .map(|(name, text)| (*name, (*text).to_owned()))
        .collect();
    texts.push(("INSTALL.md", install));
    for (name, text) in &texts {
        add_text(&mut tar, name, text.as_bytes())?;
        manifest.push_str(&format!(
            "{}  {name}\n",
            hex::encode(Sha256::digest(text.as_bytes()))
        ));
    }
    add_text(&mut tar, MANIFEST, manifest.as_bytes())?;
    let mut writer = tar.into_inner().context("failed to finish the bundle")?;
    writer.flush().context("failed to write the bundle")?;
    writer
        .get_ref()
        .sync_all()
        .context("failed to write the bundle")?;
    std::fs::rename(&partial, &args.out)
        .with_context(|| format!("failed to move the bundle to {}", args.out.display()))?;
    eprintln!(
        "bundle written: {} ({} files; model {model_name}); unpack with `tar -xf`, then run \
         `{ROOT}/bin/cairn doctor`",
        args.out.display(),
        manifest.lines().count()
    );
    Ok(())
}

fn add_text<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, format!("{ROOT}/{name}"), bytes)
        .with_context(|| format!("failed to add {name} to the bundle"))
}

fn install_note(model: &str) -> String {
    format!(
        "# Installing Cairn from this bundle\n\n\
         1. Check the files: `cd {ROOT} && sha256sum -c {MANIFEST}` (or `bin/cairn doctor`).\n\
         2. Put `bin/cairn` on the PATH; keep `models/` where it is or move it.\n\
         3. Point Cairn at the model: `export CAIRN_MODEL=$PWD/models/{model}` (or\n\
            `llm: {{ local: {{ model: … }} }}` in `$CAIRN_HOME/cairn.yaml`).\n\
         4. `cairn doctor` says what this machine gives Cairn and what is missing.\n\
         5. Pipelines: `workflows/ai-pipeline.yaml`; CI templates for GitHub and Gitea Actions:\n\
            `templates/`.\n"
    )
}

/// The model `cairn` would load: `llm.local.model`, else `CAIRN_MODEL` or the model cache.
pub fn configured_model(settings: &Settings) -> Result<PathBuf> {
    let llm = cairn_engine::llm::Settings::load(&settings.config_path())?;
    match llm.local.model {
        Some(model) => Ok(model),
        None => cairn_models::default_model_path().map_err(|error| {
            anyhow::anyhow!("{error}; name one with --model or `llm.local.model`")
        }),
    }
}

/// A GGUF file starts with the magic `GGUF`.
pub fn check_gguf(path: &Path) -> Result<()> {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .with_context(|| format!("failed to read the model {}", path.display()))?;
    if &magic != b"GGUF" {
        bail!(
            "{} is not a GGUF model file (it does not start with `GGUF`)",
            path.display()
        );
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("failed to read {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
