//! Strict, memory-mapped safetensors checkpoints.
//!
//! Loading copies every tensor of one or more safetensors files into the
//! variables of a [`tch::nn::VarStore`], matched by name. It is strict: a
//! variable with no tensor, a tensor with no variable, or a tensor of another
//! shape is an error that names the tensor. Values are converted to the dtype
//! of the variable, so a bf16 checkpoint loads into an f32 model and back.

use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// The file name of a single-file checkpoint in a model directory.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The file name of the index of a sharded checkpoint in a model directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A conversion of a checkpoint tensor, given its name.
pub type TensorTransform = dyn Fn(&str, Tensor) -> Result<Tensor>;

/// Options of [`load_into`].
#[derive(Default)]
pub struct LoadOptions<'a> {
    /// Suffixes of checkpoint tensors that are allowed to go unused, such as
    /// buffers that the model recomputes (`rotary_emb.inv_freq`).
    pub ignore_suffixes: &'a [&'a str],
    /// A conversion applied to each checkpoint tensor before the shape check,
    /// given the tensor name (for example to transpose `Conv1D` weights).
    pub transform: Option<&'a TensorTransform>,
    /// The prefix of the base model's variables (`transformer.`), used as
    /// transformers uses `base_model_prefix`. When no checkpoint tensor
    /// starts with it, the checkpoint contains the base model alone (as the
    /// `gpt2` and `openai-gpt` checkpoints do), so every name is matched with
    /// the prefix added.
    pub base_prefix: Option<&'a str>,
    /// `(variable, tensor)` pairs: a variable with no tensor of its own name
    /// takes the named tensor instead, for weights that a checkpoint stores
    /// once under another name (a tied embedding saved as the output layer).
    pub aliases: &'a [(&'a str, &'a str)],
}

/// Returns the safetensors files of a model directory: `model.safetensors`,
/// or the shards listed by `model.safetensors.index.json`.
pub fn model_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join(INDEX_FILE);
    if !index_path.is_file() {
        return Err(Error::InvalidInput(format!(
            "no weights in {}: expected {SINGLE_FILE} or {INDEX_FILE} \
             (convert a GGUF file with `cargo xtask convert gguf`)",
            dir.display()
        )));
    }
    let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
    let index: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(&index_path, "JSON", e.to_string()))?;
    let weight_map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::format(&index_path, "safetensors index", "no weight_map object"))?;
    let mut shards: Vec<&str> = Vec::new();
    for (name, shard) in weight_map {
        let shard = shard.as_str().ok_or_else(|| {
            Error::format(
                &index_path,
                "safetensors index",
                format!("shard of {name} is not a string"),
            )
        })?;
        if !shards.contains(&shard) {
            shards.push(shard);
        }
    }
    shards.sort_unstable();
    Ok(shards.into_iter().map(|s| dir.join(s)).collect())
}

fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and lives only while loading; a file
    // truncated by another process during that time is outside the contract.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Parses a safetensors file, describing a truncated file or a header length
/// past the end in numbers rather than with the terse errors of `safetensors`.
fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    let invalid = |message: String| {
        Error::format(
            path,
            "safetensors",
            format!(
                "{message} (truncated or corrupt file): replace it with a complete copy of the \
                 checkpoint"
            ),
        )
    };
    let Some(length_field) = bytes.first_chunk::<8>() else {
        return Err(invalid(format!(
            "the file has {} bytes, fewer than the 8 bytes of the header length",
            bytes.len()
        )));
    };
    let header_len = u64::from_le_bytes(*length_field);
    let after_length = bytes.len() as u64 - 8;
    if header_len > after_length {
        return Err(invalid(format!(
            "header length {header_len} exceeds the {after_length} bytes that follow it"
        )));
    }
    let (header, data) = bytes[8..].split_at(header_len as usize);
    SafeTensors::deserialize(bytes).map_err(|e| match declared_data_len(header) {
        Some(declared) if declared != data.len() as u64 => invalid(format!(
            "the header declares {declared} bytes of tensor data but {} bytes follow the header",
            data.len()
        )),
        _ => invalid(e.to_string()),
    })
}

/// Returns the end of the last tensor's data that a safetensors header
/// declares, relative to the end of the header.
fn declared_data_len(header: &[u8]) -> Option<u64> {
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .map(|(_, info)| info.get("data_offsets")?.get(1)?.as_u64())
        .try_fold(0, |max: u64, end| Some(max.max(end?)))
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        _ => return None,
    })
}

fn to_tensor(path: &Path, name: &str, view: &safetensors::tensor::TensorView) -> Result<Tensor> {
    let kind = kind_of(view.dtype()).ok_or_else(|| {
        Error::Unsupported(format!(
            "{}: tensor {name} has dtype {:?}, which libtorch cannot load",
            path.display(),
            view.dtype()
        ))
    })?;
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(view.data(), &shape, kind)?)
}

/// Loads the tensors of `files` into the variables of `vs`, strictly.
///
/// Every variable must be filled, every tensor must be used (except those
/// ending with one of `options.ignore_suffixes`), and shapes must agree.
pub fn load_into(vs: &mut VarStore, files: &[PathBuf], options: &LoadOptions) -> Result<()> {
    let maps = files
        .iter()
        .map(|p| map_file(p))
        .collect::<Result<Vec<_>>>()?;
    let parsed = files
        .iter()
        .zip(&maps)
        .map(|(p, m)| parse(p, m))
        .collect::<Result<Vec<_>>>()?;
    let mut index: HashMap<Cow<str>, (usize, safetensors::tensor::TensorView)> = HashMap::new();
    for (file, st) in parsed.iter().enumerate() {
        for (name, view) in st.iter() {
            index.insert(Cow::Borrowed(name), (file, view));
        }
    }
    if let Some(prefix) = options.base_prefix {
        if !index.keys().any(|name| name.starts_with(prefix)) {
            index = index
                .into_iter()
                .map(|(name, entry)| (Cow::Owned(format!("{prefix}{name}")), entry))
                .collect();
        }
    }

    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let mut used: HashSet<String> = HashSet::new();
    for (name, _) in &variables {
        if index.contains_key(name.as_str()) {
            continue;
        }
        let alias = options
            .aliases
            .iter()
            .find(|(var, tensor)| var == name && index.contains_key(*tensor));
        if let Some((_, tensor)) = alias {
            let entry = index[*tensor].clone();
            index.insert(Cow::Owned(name.clone()), entry);
            used.insert(tensor.to_string());
        }
    }
    let missing: Vec<String> = variables
        .iter()
        .filter(|(name, _)| !index.contains_key(name.as_str()))
        .map(|(name, _)| name.clone())
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingTensors { names: missing });
    }
    used.extend(variables.iter().map(|(n, _)| n.clone()));
    let mut unexpected: Vec<String> = index
        .keys()
        .filter(|name| !used.contains(name.as_ref()))
        .filter(|name| !options.ignore_suffixes.iter().any(|s| name.ends_with(s)))
        .map(|name| name.to_string())
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(Error::UnexpectedTensors { names: unexpected });
    }

    let _guard = tch::no_grad_guard();
    for (name, mut var) in variables {
        let (file, view) = &index[name.as_str()];
        let mut tensor = to_tensor(&files[*file], &name, view)?;
        if let Some(transform) = options.transform {
            tensor = transform(&name, tensor)?;
        }
        if tensor.size() != var.size() {
            return Err(Error::ShapeMismatch {
                name,
                expected: var.size(),
                found: tensor.size(),
            });
        }
        let tensor = tensor.f_to_kind(var.kind())?;
        var.f_copy_(&tensor)?;
    }
    Ok(())
}

/// Returns the total number of elements in the tensors of `files`, reading
/// only their headers.
pub fn count_elements(files: &[PathBuf]) -> Result<u64> {
    let mut total = 0u64;
    for path in files {
        let map = map_file(path)?;
        let st = parse(path, &map)?;
        for (_, view) in st.iter() {
            let elements: u64 = view.shape().iter().map(|&d| d as u64).product();
            total = total.saturating_add(elements);
        }
    }
    Ok(total)
}

/// Reads every tensor of a safetensors file onto the CPU, by name.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let map = map_file(path)?;
    let st = parse(path, &map)?;
    st.iter()
        .map(|(name, view)| Ok((name.to_string(), to_tensor(path, name, &view)?)))
        .collect()
}

struct OwnedView {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &OwnedView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn owned_view(name: &str, tensor: &Tensor) -> Result<OwnedView> {
    let tensor = tensor.f_to_device(tch::Device::Cpu)?.f_contiguous()?;
    let kind = tensor.f_kind()?;
    let dtype = dtype_of(kind).ok_or_else(|| {
        Error::Unsupported(format!(
            "tensor {name} has kind {kind:?}, which safetensors cannot store"
        ))
    })?;
    let numel = tensor.numel();
    let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
    tensor.f_copy_data_u8(&mut data, numel)?;
    Ok(OwnedView {
        dtype,
        shape: tensor.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Writes tensors to a safetensors file atomically: the file appears whole
/// under its name or not at all.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, t)| Ok((name.as_str(), owned_view(name, t)?)))
        .collect::<Result<Vec<_>>>()?;
    with_partial_file(path, |tmp| {
        safetensors::serialize_to_file(views.iter().map(|(n, v)| (*n, v)), metadata, tmp)
            .map_err(std::io::Error::other)?;
        std::fs::File::open(tmp)?.sync_all()
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so that an interruption never leaves a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    with_partial_file(path, |tmp| {
        let mut file = std::fs::File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })
}

/// Calls `write` on a temporary path beside `path`, then renames it to
/// `path`; removes the temporary file on failure.
fn with_partial_file(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::InvalidInput(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.partial", file_name.to_string_lossy()));
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
