//! Conversion of llama.cpp GGUF files to Hugging Face model directories.
//!
//! The tensors are dequantized to f32 and renamed from llama.cpp's names
//! (`blk.0.attn_q.weight`) to transformers' (`model.layers.0.self_attn.q_proj.weight`).
//! llama.cpp's converter permutes the rows of the Q and K projections so
//! that rotary pairs are adjacent, its interleaved layout. The inverse
//! permutation restores the half-split layout of transformers.

use crate::config::Config;
use common::gguf::{GgufFile, Value};
use common::{checkpoint, progress, tokenizer, Error, Result};
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Reads the model configuration from GGUF metadata.
pub fn config_from_gguf(gguf: &GgufFile) -> Result<Config> {
    let arch = gguf
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::format(gguf.path(), "GGUF", "no general.architecture"))?;
    if arch != "llama" {
        return Err(Error::Unsupported(format!(
            "{}: architecture {arch:?} is not supported by the llama converter",
            gguf.path().display()
        )));
    }

    let int = |key: &str| -> Result<i64> {
        let full = format!("{arch}.{key}");
        gguf.get(&full)
            .and_then(Value::as_i64)
            .ok_or_else(|| Error::format(gguf.path(), "GGUF", format!("missing integer {full}")))
    };
    let float = |key: &str, default: f64| {
        gguf.get(&format!("{arch}.{key}"))
            .and_then(Value::as_f64)
            .unwrap_or(default)
    };
    let token_id = |key: &str| {
        gguf.get(key)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };

    let num_heads = int("attention.head_count")?;
    let hidden_size = int("embedding_length")?;
    let vocab_size = match gguf
        .get(&format!("{arch}.vocab_size"))
        .and_then(Value::as_i64)
    {
        Some(v) => v,
        None => gguf
            .tensor("token_embd.weight")
            .and_then(|t| t.torch_shape().first().copied())
            .ok_or_else(|| Error::format(gguf.path(), "GGUF", "no token_embd.weight tensor"))?,
    };
    let head_dim = gguf
        .get(&format!("{arch}.attention.key_length"))
        .and_then(Value::as_i64)
        .unwrap_or(hidden_size / num_heads.max(1));

    let config = Config {
        hidden_size,
        intermediate_size: int("feed_forward_length")?,
        num_layers: int("block_count")?,
        num_heads,
        num_kv_heads: int("attention.head_count_kv").unwrap_or(num_heads),
        head_dim,
        vocab_size,
        // GGUF stores eps as f32, so round it to the decimal it was written
        // from (1e-5, not 9.999999747378752e-06).
        rms_norm_eps: round_f32(float("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta: round_f32(float("rope.freq_base", 10_000.0)),
        max_position_embeddings: int("context_length")?,
        tie_word_embeddings: gguf.tensor("output.weight").is_none(),
        attention_bias: gguf.tensor("blk.0.attn_q.bias").is_some(),
        mlp_bias: false,
        bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
        eos_token_ids: token_id("tokenizer.ggml.eos_token_id")
            .into_iter()
            .collect(),
    };
    config.validate()?;
    Ok(config)
}

/// Rounds to the shortest decimal that reads back as the same f32.
fn round_f32(value: f64) -> f64 {
    let single = value as f32;
    format!("{single}").parse().unwrap_or(value)
}

/// Maps a llama.cpp tensor name to the transformers name.
fn hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(fixed) = fixed {
        return Some(fixed.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    layer.parse::<u32>().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let hf_module = match module {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf_module}.{kind}"))
}

/// Undoes llama.cpp's row permutation of a Q or K projection with `heads`
/// heads: within each head, rows `[0, 2, 4, ..., 1, 3, 5, ...]` of the GGUF
/// tensor go back to `[0, 1, 2, ...]`.
///
/// # Shapes
/// `(heads * head_dim, ...)`, weight or bias.
pub fn unpermute_rotary_rows(tensor: &Tensor, heads: i64) -> Result<Tensor> {
    let shape = tensor.size();
    let rows = shape[0];
    if heads <= 0 || rows % (2 * heads) != 0 {
        return Err(Error::InvalidInput(format!(
            "cannot split {rows} rows into {heads} heads of rotary pairs"
        )));
    }
    let mut split = vec![heads, rows / heads / 2, 2];
    split.extend_from_slice(&shape[1..]);
    Ok(tensor
        .f_reshape(&split)?
        .f_transpose(1, 2)?
        .f_reshape(&shape)?
        .f_contiguous()?)
}

/// Converts the GGUF file at `input` into a model directory at `output`:
/// `config.json`, `model.safetensors` (f32) and, when the file has a
/// vocabulary, `tokenizer.json` and `tokenizer_config.json`.
///
/// The directory is written under a temporary name and renamed when
/// complete, so an interrupted conversion leaves no partial model.
pub fn gguf_to_model_dir(input: &Path, output: &Path, show_progress: bool) -> Result<()> {
    match std::fs::metadata(input) {
        Ok(metadata) if metadata.is_file() => {}
        Ok(_) => {
            return Err(Error::InvalidInput(format!(
                "{} is not a file: pass the path of a GGUF file",
                input.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::InvalidInput(format!(
                "{} not found: pass the path of an existing GGUF file",
                input.display()
            )))
        }
        Err(e) => return Err(Error::io(input, e)),
    }
    if output.exists() {
        return Err(Error::InvalidInput(format!(
            "{} already exists: remove it or choose another output directory",
            output.display()
        )));
    }
    let gguf = GgufFile::open(input)?;
    let config = config_from_gguf(&gguf)?;

    // Check every name and type before the slow part.
    for info in gguf.tensors() {
        if hf_name(&info.name).is_none() {
            return Err(Error::Unsupported(format!(
                "{}: tensor {} has no counterpart in the transformers Llama model",
                input.display(),
                info.name
            )));
        }
        if !info.ggml_type.can_dequantize() {
            // `block_layout` is None exactly for the ids that have no ggml name.
            let type_name = match info.ggml_type.block_layout() {
                Some(_) => format!("type {}", info.ggml_type),
                None => format!("unknown type id {}", info.ggml_type.id()),
            };
            return Err(Error::Unsupported(format!(
                "{}: tensor {} has {type_name}, which cannot be dequantized. Use a GGUF file \
                 whose tensors have supported types: \
                 F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K",
                input.display(),
                info.name,
            )));
        }
    }

    let count = gguf.tensors().len() as u64;
    let bar = if show_progress {
        progress::bar(count, "converting")
    } else {
        progress::hidden_bar(count)
    };
    let mut tensors = Vec::with_capacity(gguf.tensors().len());
    for info in gguf.tensors() {
        let name = hf_name(&info.name).expect("names were checked above");
        let mut tensor = gguf.dequantize(info)?;
        if name.contains("self_attn.q_proj") {
            tensor = unpermute_rotary_rows(&tensor, config.num_heads)?;
        } else if name.contains("self_attn.k_proj") {
            tensor = unpermute_rotary_rows(&tensor, config.num_kv_heads)?;
        }
        tensors.push((name, tensor));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let partial = partial_dir(output);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| {
        Error::InvalidInput(format!(
            "cannot create the output directory {}: {e}; choose a writable location",
            output.display()
        ))
    })?;
    let result = write_model_dir(&partial, &gguf, &config, &tensors)
        .and_then(|()| std::fs::rename(&partial, output).map_err(|e| Error::io(output, e)));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

fn partial_dir(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    output.with_file_name(format!(".{name}.partial"))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::InvalidInput(format!("cannot serialize {}: {e}", path.display())))?;
    checkpoint::write_atomic(path, text.as_bytes())
}

fn write_model_dir(
    dir: &Path,
    gguf: &GgufFile,
    config: &Config,
    tensors: &[(String, Tensor)],
) -> Result<()> {
    let mut hf = serde_json::to_value(config.to_hf())
        .map_err(|e| Error::InvalidInput(format!("cannot serialize the config: {e}")))?;
    hf["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    write_json(&dir.join("config.json"), &hf)?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    checkpoint::save(&dir.join(checkpoint::SINGLE_FILE), tensors, Some(metadata))?;
    if gguf.get("tokenizer.ggml.model").is_some() {
        let (tokenizer_json, tokenizer_config) =
            tokenizer::from_gguf(gguf).map_err(|e| match e {
                Error::Unsupported(message) => {
                    Error::Unsupported(format!("{}: {message}", gguf.path().display()))
                }
                other => other,
            })?;
        write_json(&dir.join("tokenizer.json"), &tokenizer_json)?;
        write_json(&dir.join("tokenizer_config.json"), &tokenizer_config)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_transformers() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").unwrap(),
            "model.layers.12.self_attn.q_proj.weight"
        );
        assert_eq!(hf_name("output.weight").unwrap(), "lm_head.weight");
        assert!(hf_name("blk.x.attn_q.weight").is_none());
        assert!(hf_name("rope_freqs.weight").is_none());
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: reshape (heads, 2, rows / heads / 2, cols), swap axes 1
        // and 2. Rows of one head [0 1 2 3] become [0 2 1 3].
        let rows = Tensor::arange(8, (tch::Kind::Int64, tch::Device::Cpu)).view([8, 1]);
        let permuted = rows.view([2, 2, 2, 1]).transpose(1, 2).reshape([8, 1]);
        let permuted_rows: Vec<i64> = Vec::try_from(permuted.view([8])).unwrap();
        assert_eq!(permuted_rows, [0, 2, 1, 3, 4, 6, 5, 7]);
        let restored = unpermute_rotary_rows(&permuted, 2).unwrap();
        assert!(restored.equal(&rows));
    }
}
