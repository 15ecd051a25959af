//! Conversion of OpenAI's TorchScript CLIP releases (`ViT-B-32.pt`,
//! `ViT-L-14.pt`, ...) to a model directory with transformers' `CLIPModel`
//! names.
//!
//! The archives are `torch.jit` modules with fp16 weights whose parameter
//! names are those of the model code in OpenAI's `clip` package. They store
//! no configuration beyond three integer tensors, so the conversion infers it
//! from the tensor shapes as `clip.model.build_model` does. The widths come
//! from the LayerNorms and the patch convolution, the layer counts from the
//! `resblocks` indices and the grid from the number of image positions, with
//! one attention head per 64 channels.
//!
//! Besides renaming, the conversion splits each packed attention input
//! projection (`in_proj_weight`, rows q, k, v) into `q_proj`, `k_proj` and
//! `v_proj`, and transposes the two projections, which OpenAI multiplies from
//! the right (`x @ proj`), into linear weights.

use crate::{Config, TextConfig, VisionConfig};
use common::{checkpoint, Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::{CModule, Device, Kind, Tensor};

/// The format named in errors about the archive's contents.
const FORMAT: &str = "OpenAI CLIP TorchScript";

/// The channels of one attention head: `build_model` sets the number of
/// heads to width / 64.
const HEAD_WIDTH: i64 = 64;

/// The epsilon of every LayerNorm in OpenAI's model (`torch.nn.LayerNorm`'s
/// default).
const LAYER_NORM_EPS: f64 = 1e-5;

/// OpenAI's feed-forward activation, x * sigmoid(1.702 x).
const ACTIVATION: &str = "quick_gelu";

/// The next step, for errors about a file that the conversion cannot use.
const EXPECTED: &str = "pass an OpenAI CLIP ViT model as a TorchScript archive \
                        (torch.jit.save), such as ViT-B-32.pt";

/// Tensors that prefix the parameters of a ModifiedResNet image encoder.
const RESNET_PREFIXES: &[&str] = &["visual.layer1.", "visual.attnpool."];

/// Integer tensors of the releases that repeat what the shapes give.
const SIZE_TENSORS: &[&str] = &["input_resolution", "context_length", "vocab_size"];

/// Converts an OpenAI CLIP TorchScript archive to `config.json` and an f32
/// `model.safetensors` in `output_dir`, creating the directory if needed.
///
/// Every tensor of the archive must have its place in transformers'
/// `CLIPModel`, so an unexpected tensor is an error, and so is a ResNet
/// image encoder (only the ViT models are supported). An existing output
/// file is an error and stays as it is. Everything is converted before the
/// first file is written, and each file is written atomically, so on error
/// the directory contains neither file.
///
/// NOTE: libtorch compiles the archive's TorchScript code when it loads it,
/// and runs any `__setstate__` method that the archive defines, so only
/// convert archives from a trusted source.
pub fn convert_torchscript(input: &Path, output_dir: &Path) -> Result<()> {
    check_input(input)?;
    let config_path = output_dir.join("config.json");
    let weights_path = output_dir.join(checkpoint::SINGLE_FILE);
    for path in [&config_path, &weights_path] {
        if path.exists() {
            return Err(Error::InvalidInput(format!(
                "{} already exists: remove it or choose another output directory",
                path.display()
            )));
        }
    }

    let mut archive = Archive::load(input)?;
    let (config, tensors) = archive.convert()?;

    let created = !output_dir.exists();
    std::fs::create_dir_all(output_dir).map_err(|e| Error::io(output_dir, e))?;
    let metadata = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    let result = checkpoint::save(&weights_path, &tensors, Some(metadata)).and_then(|()| {
        config.save(&config_path).inspect_err(|_| {
            let _ = std::fs::remove_file(&weights_path);
        })
    });
    if result.is_err() && created {
        // Removes the directory only if it is empty.
        let _ = std::fs::remove_dir(output_dir);
    }
    result
}

fn check_input(input: &Path) -> Result<()> {
    match std::fs::metadata(input) {
        Ok(metadata) if metadata.is_file() => Ok(()),
        Ok(_) => Err(Error::InvalidInput(format!(
            "{} is not a file: {EXPECTED}",
            input.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::InvalidInput(format!(
            "{} not found: {EXPECTED}",
            input.display()
        ))),
        Err(e) => Err(Error::io(input, e)),
    }
}

/// Returns the first line of a libtorch error up to its first full stop,
/// without the C++ backtrace and the generic advice that follow it.
fn first_sentence(message: &str) -> &str {
    let line = message.lines().next().unwrap_or_default();
    match line.find(". ") {
        Some(end) => &line[..end],
        None => line.trim_end_matches('.'),
    }
}

/// The sizes of one transformer encoder.
struct EncoderShape {
    width: i64,
    layers: i64,
    intermediate: i64,
    heads: i64,
}

/// The parameters of a loaded archive, removed as they are converted.
struct Archive<'a> {
    path: &'a Path,
    tensors: BTreeMap<String, Tensor>,
}

impl<'a> Archive<'a> {
    /// Loads the parameters of a TorchScript archive onto the CPU.
    ///
    /// `CModule` gives access to parameters only, not to buffers. The
    /// integer sizes of the releases are needed only as a cross-check, so
    /// they are checked when they are parameters and ignored otherwise.
    fn load(path: &'a Path) -> Result<Self> {
        let module = CModule::load_on_device(path, Device::Cpu).map_err(|e| {
            let message = match &e {
                tch::TchError::Torch(message) => first_sentence(message).to_string(),
                other => other.to_string(),
            };
            Error::format(
                path,
                "TorchScript",
                format!("libtorch cannot load it ({message}): {EXPECTED}"),
            )
        })?;
        let tensors = module.named_parameters()?.into_iter().collect();
        Ok(Self { path, tensors })
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::format(self.path, FORMAT, message)
    }

    /// Returns the shape of a tensor, leaving it in the archive.
    fn shape(&self, name: &str) -> Result<Vec<i64>> {
        self.tensors
            .get(name)
            .map(Tensor::size)
            .ok_or_else(|| self.missing(name))
    }

    fn missing(&self, name: &str) -> Error {
        let found: Vec<&str> = self.tensors.keys().take(5).map(String::as_str).collect();
        self.error(format!(
            "tensor {name} not found (the archive has {} parameters, starting with {}): {EXPECTED}",
            self.tensors.len(),
            found.join(", ")
        ))
    }

    /// Removes a floating-point tensor of the given shape from the archive
    /// and returns it as f32.
    fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let tensor = self
            .tensors
            .remove(name)
            .ok_or_else(|| self.missing(name))?;
        if tensor.size() != shape {
            return Err(self.error(format!(
                "tensor {name} has shape {:?}, but the other tensors imply {shape:?}",
                tensor.size()
            )));
        }
        match tensor.f_kind()? {
            Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double => {}
            kind => {
                return Err(self.error(format!(
                    "tensor {name} has dtype {kind:?}, but CLIP's weights are floating point"
                )))
            }
        }
        Ok(tensor.f_to_kind(Kind::Float)?)
    }

    /// Counts the layers under `prefix` (`visual.transformer.resblocks.`),
    /// which must be numbered from 0 without gaps.
    fn layer_count(&self, prefix: &str) -> Result<i64> {
        let indices: BTreeSet<usize> = self
            .tensors
            .keys()
            .filter_map(|name| name.strip_prefix(prefix)?.split('.').next()?.parse().ok())
            .collect();
        if let Some(gap) = (0..indices.len()).find(|i| !indices.contains(i)) {
            return Err(self.error(format!(
                "layer {prefix}{gap} is missing, but layers up to {prefix}{} are present",
                indices.last().copied().unwrap_or_default()
            )));
        }
        if indices.is_empty() {
            return Err(self.error(format!("no layers {prefix}0, {prefix}1, ...: {EXPECTED}")));
        }
        Ok(indices.len() as i64)
    }

    /// Infers the sizes of the encoder whose layers are under `prefix` and
    /// whose width is `width`.
    fn encoder_shape(&self, prefix: &str, width: i64) -> Result<EncoderShape> {
        let heads = width / HEAD_WIDTH;
        if heads == 0 {
            return Err(self.error(format!(
                "the {prefix} layers are {width} wide, narrower than one attention head of \
                 {HEAD_WIDTH}"
            )));
        }
        let layers = self.layer_count(prefix)?;
        let intermediate = *self
            .shape(&format!("{prefix}0.mlp.c_fc.weight"))?
            .first()
            .unwrap_or(&0);
        Ok(EncoderShape {
            width,
            layers,
            intermediate,
            heads,
        })
    }

    /// Infers the configuration from the shapes, then converts every tensor.
    fn convert(&mut self) -> Result<(Config, Vec<(String, Tensor)>)> {
        if let Some(name) = self
            .tensors
            .keys()
            .find(|name| RESNET_PREFIXES.iter().any(|p| name.starts_with(p)))
        {
            return Err(Error::Unsupported(format!(
                "{}: the image encoder is a ModifiedResNet (tensor {name}), but only ViT models \
                 are supported: convert ViT-B/32, ViT-B/16, ViT-L/14 or ViT-L/14@336px",
                self.path.display()
            )));
        }

        let config = self.infer_config()?;
        self.check_sizes(&config)?;
        let mut tensors = Vec::new();
        self.convert_vision(&config, &mut tensors)?;
        self.convert_text(&config, &mut tensors)?;
        let logit_scale = self.take("logit_scale", &[])?;
        tensors.push(("logit_scale".into(), logit_scale));

        if !self.tensors.is_empty() {
            let names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
            return Err(self.error(format!(
                "unexpected tensors, which a CLIP ViT model does not have: {}",
                names.join(", ")
            )));
        }
        Ok((config, tensors))
    }

    fn infer_config(&self) -> Result<Config> {
        let conv = self.shape("visual.conv1.weight")?;
        let [vision_width, channels, patch, patch_width] = conv[..] else {
            return Err(self.error(format!(
                "visual.conv1.weight has shape {conv:?}, but the patch embedding is a 2-D \
                 convolution (width, channels, patch, patch)"
            )));
        };
        if patch != patch_width {
            return Err(self.error(format!(
                "the patches are {patch} x {patch_width} pixels, but CLIP's are square"
            )));
        }
        let positions = *self
            .shape("visual.positional_embedding")?
            .first()
            .unwrap_or(&0);
        let grid = (positions - 1).max(0).isqrt();
        if grid == 0 || grid * grid + 1 != positions {
            return Err(self.error(format!(
                "visual.positional_embedding has {positions} positions, but a square grid of \
                 patches and the class token give n * n + 1"
            )));
        }
        let text_width = *self.shape("ln_final.weight")?.first().unwrap_or(&0);
        let projection = self.shape("text_projection")?;
        let [_, embed_dim] = projection[..] else {
            return Err(self.error(format!(
                "text_projection has shape {projection:?}, but it is a matrix (width, embed_dim)"
            )));
        };
        let context_length = *self.shape("positional_embedding")?.first().unwrap_or(&0);
        let vocab_size = *self.shape("token_embedding.weight")?.first().unwrap_or(&0);
        // The vocabulary ends with <|startoftext|> and <|endoftext|>.
        if vocab_size < 2 {
            return Err(self.error(format!(
                "token_embedding.weight has {vocab_size} rows, fewer than the two special tokens"
            )));
        }

        let vision = self.encoder_shape("visual.transformer.resblocks.", vision_width)?;
        let text = self.encoder_shape("transformer.resblocks.", text_width)?;
        let config = Config {
            text_config: TextConfig {
                vocab_size,
                hidden_size: text.width,
                intermediate_size: text.intermediate,
                num_hidden_layers: text.layers,
                num_attention_heads: text.heads,
                max_position_embeddings: context_length,
                hidden_act: ACTIVATION.into(),
                layer_norm_eps: LAYER_NORM_EPS,
                bos_token_id: vocab_size - 2,
                eos_token_id: vocab_size - 1,
                ..TextConfig::default()
            },
            vision_config: VisionConfig {
                hidden_size: vision.width,
                intermediate_size: vision.intermediate,
                num_hidden_layers: vision.layers,
                num_attention_heads: vision.heads,
                num_channels: channels,
                image_size: patch * grid,
                patch_size: patch,
                hidden_act: ACTIVATION.into(),
                layer_norm_eps: LAYER_NORM_EPS,
            },
            projection_dim: embed_dim,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| self.error(format!("the shapes give an invalid configuration: {e}")))?;
        Ok(config)
    }

    /// Checks the integer sizes that the releases store, when they are
    /// parameters, against the configuration, and removes them.
    fn check_sizes(&mut self, config: &Config) -> Result<()> {
        let expected = [
            config.vision_config.image_size,
            config.text_config.max_position_embeddings,
            config.text_config.vocab_size,
        ];
        for (&name, expected) in SIZE_TENSORS.iter().zip(expected) {
            let Some(tensor) = self.tensors.remove(name) else {
                continue;
            };
            let value = match tensor.numel() {
                1 => tensor.f_reshape([-1])?.f_double_value(&[0])?,
                _ => {
                    return Err(self.error(format!(
                        "{name} has shape {:?}, but it is a single number",
                        tensor.size()
                    )))
                }
            };
            if value != expected as f64 {
                return Err(self.error(format!(
                    "{name} is {value}, but the tensor shapes give {expected}"
                )));
            }
        }
        Ok(())
    }

    fn convert_vision(&mut self, config: &Config, out: &mut Vec<(String, Tensor)>) -> Result<()> {
        let v = &config.vision_config;
        let width = v.hidden_size;
        let grid = config.grid_size();
        let embeddings = [
            (
                "visual.class_embedding",
                "vision_model.embeddings.class_embedding",
                vec![width],
            ),
            (
                "visual.conv1.weight",
                "vision_model.embeddings.patch_embedding.weight",
                vec![width, v.num_channels, v.patch_size, v.patch_size],
            ),
            (
                "visual.positional_embedding",
                "vision_model.embeddings.position_embedding.weight",
                vec![grid * grid + 1, width],
            ),
        ];
        for (from, to, shape) in embeddings {
            out.push((to.into(), self.take(from, &shape)?));
        }
        self.take_layer_norm("visual.ln_pre", "vision_model.pre_layrnorm", width, out)?;
        for i in 0..v.num_hidden_layers {
            self.take_layer(
                &format!("visual.transformer.resblocks.{i}"),
                &format!("vision_model.encoder.layers.{i}"),
                width,
                v.intermediate_size,
                out,
            )?;
        }
        self.take_layer_norm("visual.ln_post", "vision_model.post_layernorm", width, out)?;
        let projection = self.take("visual.proj", &[width, config.projection_dim])?;
        out.push(("visual_projection.weight".into(), projection.f_t_copy()?));
        Ok(())
    }

    fn convert_text(&mut self, config: &Config, out: &mut Vec<(String, Tensor)>) -> Result<()> {
        let t = &config.text_config;
        let width = t.hidden_size;
        let token_embedding = self.take("token_embedding.weight", &[t.vocab_size, width])?;
        out.push((
            "text_model.embeddings.token_embedding.weight".into(),
            token_embedding,
        ));
        let position_embedding =
            self.take("positional_embedding", &[t.max_position_embeddings, width])?;
        out.push((
            "text_model.embeddings.position_embedding.weight".into(),
            position_embedding,
        ));
        for i in 0..t.num_hidden_layers {
            self.take_layer(
                &format!("transformer.resblocks.{i}"),
                &format!("text_model.encoder.layers.{i}"),
                width,
                t.intermediate_size,
                out,
            )?;
        }
        self.take_layer_norm("ln_final", "text_model.final_layer_norm", width, out)?;
        let projection = self.take("text_projection", &[width, config.projection_dim])?;
        out.push(("text_projection.weight".into(), projection.f_t_copy()?));
        Ok(())
    }

    fn take_layer_norm(
        &mut self,
        from: &str,
        to: &str,
        width: i64,
        out: &mut Vec<(String, Tensor)>,
    ) -> Result<()> {
        for parameter in ["weight", "bias"] {
            let tensor = self.take(&format!("{from}.{parameter}"), &[width])?;
            out.push((format!("{to}.{parameter}"), tensor));
        }
        Ok(())
    }

    /// Converts one `ResidualAttentionBlock` to a `CLIPEncoderLayer`.
    fn take_layer(
        &mut self,
        from: &str,
        to: &str,
        width: i64,
        intermediate: i64,
        out: &mut Vec<(String, Tensor)>,
    ) -> Result<()> {
        let in_weight = self.take(&format!("{from}.attn.in_proj_weight"), &[3 * width, width])?;
        let in_bias = self.take(&format!("{from}.attn.in_proj_bias"), &[3 * width])?;
        for (i, projection) in ["q_proj", "k_proj", "v_proj"].into_iter().enumerate() {
            let start = i as i64 * width;
            out.push((
                format!("{to}.self_attn.{projection}.weight"),
                in_weight.f_narrow(0, start, width)?,
            ));
            out.push((
                format!("{to}.self_attn.{projection}.bias"),
                in_bias.f_narrow(0, start, width)?,
            ));
        }

        let linears = [
            ("attn.out_proj", "self_attn.out_proj", width, width),
            ("mlp.c_fc", "mlp.fc1", intermediate, width),
            ("mlp.c_proj", "mlp.fc2", width, intermediate),
        ];
        for (from_name, to_name, rows, columns) in linears {
            let weight = self.take(&format!("{from}.{from_name}.weight"), &[rows, columns])?;
            let bias = self.take(&format!("{from}.{from_name}.bias"), &[rows])?;
            out.push((format!("{to}.{to_name}.weight"), weight));
            out.push((format!("{to}.{to_name}.bias"), bias));
        }
        self.take_layer_norm(
            &format!("{from}.ln_1"),
            &format!("{to}.layer_norm1"),
            width,
            out,
        )?;
        self.take_layer_norm(
            &format!("{from}.ln_2"),
            &format!("{to}.layer_norm2"),
            width,
            out,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDTH: i64 = 64;

    /// Returns random parameters of a ViT CLIP that is 64 wide, with 16 x 16
    /// images in 8 x 8 patches, 16 positions and a vocabulary of 10 tokens.
    fn parameters(vision_layers: i64, text_layers: i64) -> BTreeMap<String, Tensor> {
        let options = (Kind::Half, Device::Cpu);
        let mut shapes: Vec<(String, Vec<i64>)> = vec![
            ("logit_scale".into(), vec![]),
            ("text_projection".into(), vec![WIDTH, 32]),
            ("positional_embedding".into(), vec![16, WIDTH]),
            ("token_embedding.weight".into(), vec![10, WIDTH]),
            ("ln_final.weight".into(), vec![WIDTH]),
            ("ln_final.bias".into(), vec![WIDTH]),
            ("visual.proj".into(), vec![WIDTH, 32]),
            ("visual.class_embedding".into(), vec![WIDTH]),
            ("visual.positional_embedding".into(), vec![5, WIDTH]),
            ("visual.conv1.weight".into(), vec![WIDTH, 3, 8, 8]),
        ];
        for norm in ["visual.ln_pre", "visual.ln_post"] {
            shapes.push((format!("{norm}.weight"), vec![WIDTH]));
            shapes.push((format!("{norm}.bias"), vec![WIDTH]));
        }
        let encoders = [
            ("visual.transformer.resblocks", vision_layers),
            ("transformer.resblocks", text_layers),
        ];
        for (prefix, layers) in encoders {
            for i in 0..layers {
                let layer = [
                    ("attn.in_proj_weight", vec![3 * WIDTH, WIDTH]),
                    ("attn.in_proj_bias", vec![3 * WIDTH]),
                    ("attn.out_proj.weight", vec![WIDTH, WIDTH]),
                    ("attn.out_proj.bias", vec![WIDTH]),
                    ("ln_1.weight", vec![WIDTH]),
                    ("ln_1.bias", vec![WIDTH]),
                    ("mlp.c_fc.weight", vec![4 * WIDTH, WIDTH]),
                    ("mlp.c_fc.bias", vec![4 * WIDTH]),
                    ("mlp.c_proj.weight", vec![WIDTH, 4 * WIDTH]),
                    ("mlp.c_proj.bias", vec![WIDTH]),
                    ("ln_2.weight", vec![WIDTH]),
                    ("ln_2.bias", vec![WIDTH]),
                ];
                for (name, shape) in layer {
                    shapes.push((format!("{prefix}.{i}.{name}"), shape));
                }
            }
        }
        shapes
            .into_iter()
            .map(|(name, shape)| (name, Tensor::randn(shape.as_slice(), options)))
            .collect()
    }

    fn convert(tensors: BTreeMap<String, Tensor>) -> Result<(Config, Vec<(String, Tensor)>)> {
        let mut archive = Archive {
            path: Path::new("ViT-test.pt"),
            tensors,
        };
        archive.convert()
    }

    #[test]
    fn shapes_give_config() {
        let (config, tensors) = convert(parameters(3, 2)).unwrap();
        let (text, vision) = (&config.text_config, &config.vision_config);
        assert_eq!(vision.num_hidden_layers, 3);
        assert_eq!(text.num_hidden_layers, 2);
        assert_eq!(vision.image_size, 16);
        assert_eq!(vision.patch_size, 8);
        assert_eq!(text.max_position_embeddings, 16);
        assert_eq!((text.bos_token_id, text.eos_token_id), (8, 9));
        assert_eq!(config.projection_dim, 32);
        // Five embedding tensors (token, class, patch and two position
        // embeddings), three LayerNorms, two projections and logit_scale,
        // then 16 tensors per layer.
        assert_eq!(tensors.len(), 5 + 3 * 2 + 2 + 1 + 16 * 5);
        assert!(tensors.iter().all(|(_, t)| t.kind() == Kind::Float));
    }

    #[test]
    fn size_tensors_checked() {
        let mut tensors = parameters(1, 1);
        tensors.insert("input_resolution".into(), Tensor::from(16i64));
        tensors.insert("vocab_size".into(), Tensor::from(10i64));
        convert(
            tensors
                .iter()
                .map(|(k, v)| (k.clone(), v.shallow_clone()))
                .collect(),
        )
        .unwrap();

        tensors.insert("context_length".into(), Tensor::from(77i64));
        let err = convert(tensors).unwrap_err().to_string();
        assert!(err.contains("context_length is 77"), "{err}");
        assert!(err.contains("give 16"), "{err}");
    }

    #[test]
    fn unexpected_tensor_rejected() {
        let mut tensors = parameters(1, 1);
        tensors.insert("visual.extra".into(), Tensor::from(1f32));
        let err = convert(tensors).unwrap_err().to_string();
        assert!(err.contains("ViT-test.pt"), "{err}");
        assert!(err.contains("unexpected tensors"), "{err}");
        assert!(err.contains("visual.extra"), "{err}");
    }

    #[test]
    fn layer_gap_rejected() {
        let mut tensors = parameters(1, 2);
        tensors.retain(|name, _| !name.starts_with("transformer.resblocks.0."));
        let err = convert(tensors).unwrap_err().to_string();
        assert!(err.contains("transformer.resblocks.0 is missing"), "{err}");
    }

    #[test]
    fn wrong_shape_rejected() {
        let mut tensors = parameters(2, 1);
        let name = "visual.transformer.resblocks.1.mlp.c_fc.weight";
        tensors.insert(
            name.into(),
            Tensor::zeros([WIDTH, WIDTH], (Kind::Half, Device::Cpu)),
        );
        let err = convert(tensors).unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
        assert!(err.contains("[64, 64]"), "{err}");
    }

    #[test]
    fn first_sentence_drops_advice_and_backtrace() {
        let message = "PytorchStreamReader failed reading zip archive: not a ZIP archive. This \
                       is an internal miniz error.\nException raised from ...";
        assert_eq!(
            first_sentence(message),
            "PytorchStreamReader failed reading zip archive: not a ZIP archive"
        );
        assert_eq!(first_sentence("short message."), "short message");
    }
}
