//! Reader for GGUF files (versions 2 and 3) and dequantizer for the ggml
//! block formats stored in them.
//!
//! The layout follows the GGUF specification in ggml (`docs/gguf.md`). The
//! validation follows ggml's `gguf.cpp`, except that this reader also accepts
//! nested arrays, empty keys, long tensor names, unknown tensor types and gaps
//! between the data of consecutive tensors. The block
//! layouts and the arithmetic of the dequantizers follow the
//! `dequantize_row_*` routines of ggml's `ggml-quants.c`. gguf-py 0.19
//! (`gguf/gguf_reader.py`, `gguf/quants.py`) is the reference for the tests:
//! every supported type dequantizes to the same f32 bits as
//! `gguf.quants.dequantize`, because both evaluate the same products in f32
//! in the same order.
//!
//! A GGUF file is input of unknown origin. The parser therefore bounds every
//! count and length by the bytes left in the file before it allocates. It
//! reports a malformed file as [`Error::Format`] with the byte offset of the
//! offending field.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16, slice::HalfFloatSliceExt};
use memmap2::Mmap;

use crate::{Error, Result};

mod dequant;
mod header;

use dequant::*;
use header::*;

const FORMAT: &str = "GGUF";
const MAGIC: &[u8; 4] = b"GGUF";
/// Data alignment of a file without `general.alignment`.
const DEFAULT_ALIGNMENT: u64 = 32;
/// `GGML_MAX_DIMS` in ggml.
const MAX_DIMS: u32 = 4;
/// Nesting limit for array values. ggml rejects nested arrays altogether,
/// but gguf-py accepts any depth. The limit keeps the recursive parser from
/// overflowing the stack.
const MAX_ARRAY_DEPTH: usize = 8;
/// Smallest metadata entry: an empty key (8), the value type (4), a u8 (1).
const MIN_KV_BYTES: u64 = 13;
/// Smallest tensor info: an empty name (8), n_dims = 0 (4), type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;
/// Elements per super-block of the k-quant types.
const QK_K: usize = 256;

/// Types that [`dequantize`] supports, in the order error messages list them.
const SUPPORTED_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// A metadata value. The variants are the GGUF value types.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// An array. GGUF requires all items to have the same type.
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// Returns the value of an integer variant if it is non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Returns the value of an integer variant if it fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Returns the value of a float or integer variant as an `f64`, rounded
    /// to the nearest `f64` for 64-bit integers beyond 2^53.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// Returns the value of a [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// Returns the value of a [`Value::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(v) => Some(v),
            _ => None,
        }
    }

    /// Returns the items of a [`Value::Array`].
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// A ggml tensor type, identified in GGUF files by its ggml id.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    BF16,
    /// Any other ggml id. [`GgmlType::from_id`] never puts the id of a named
    /// variant here.
    Other(u32),
}

/// Name, elements per block and bytes per block of the ggml types without a
/// variant of their own, from `GGML_QUANT_SIZES` in gguf-py 0.19.
const OTHER_TYPES: &[(u32, &str, u64, u64)] = &[
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    /// Maps a ggml type id to its type.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2_K,
            11 => GgmlType::Q3_K,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            15 => GgmlType::Q8_K,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// Returns the ggml type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::BF16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    /// Returns the ggml name ("Q4_K"), or "type N" for an id unknown to
    /// gguf-py 0.19.
    pub fn name(self) -> Cow<'static, str> {
        let name = match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::Q8_K => "Q8_K",
            GgmlType::BF16 => "BF16",
            GgmlType::Other(id) => match other_type(id) {
                Some((_, name, _, _)) => name,
                None => return Cow::Owned(format!("type {id}")),
            },
        };
        Cow::Borrowed(name)
    }

    /// Returns the number of elements per block and the bytes per block, or
    /// `None` for an id unknown to gguf-py 0.19.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        let layout = match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            // block_q8_1 in ggml-common.h is two f16 (d, s) and 32 i8. gguf-py
            // 0.19 lists 40 bytes, the size of an older layout with two f32.
            GgmlType::Q8_1 => (32, 36),
            GgmlType::Q2_K => (256, 84),
            GgmlType::Q3_K => (256, 110),
            GgmlType::Q4_K => (256, 144),
            GgmlType::Q5_K => (256, 176),
            GgmlType::Q6_K => (256, 210),
            GgmlType::Q8_K => (256, 292),
            GgmlType::Other(id) => {
                let (_, _, block_size, type_size) = other_type(id)?;
                (*block_size, *type_size)
            }
        };
        Some(layout)
    }

    /// Returns whether [`dequantize`] supports this type.
    pub fn can_dequantize(self) -> bool {
        SUPPORTED_TYPES.contains(&self)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

fn other_type(id: u32) -> Option<&'static (u32, &'static str, u64, u64)> {
    OTHER_TYPES.iter().find(|entry| entry.0 == id)
}

/// The description of one tensor in a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in GGUF order: `dims[0]` varies fastest.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the tensor data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Returns the shape in PyTorch and Hugging Face order (the reversed
    /// `dims`). [`GgufFile::open`] rejects dimensions beyond `i64::MAX`.
    pub fn torch_shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }

    /// Returns the number of elements, saturated at `u64::MAX`.
    /// [`GgufFile::open`] rejects tensors whose count overflows an `i64`.
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Returns the size of the tensor data in bytes, or `None` when the type
    /// is unknown, the first dimension is not a whole number of blocks, or
    /// the size overflows a `u64`.
    pub fn n_bytes(&self) -> Option<u64> {
        let (block_size, type_size) = self.ggml_type.block_layout()?;
        let row = self.dims.first().copied().unwrap_or(1);
        if row % block_size != 0 {
            return None;
        }
        (self.n_elements() / block_size).checked_mul(type_size)
    }
}

/// A memory-mapped GGUF file with its parsed metadata and tensor infos.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl GgufFile {
    /// Maps the file and parses and validates its header, metadata and
    /// tensor infos. Every tensor's data range is checked against the file
    /// size here, so [`GgufFile::tensor_bytes`] returns a format error only
    /// for a tensor info that did not come from this file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Err(Error::format(path, FORMAT, "the file is empty"));
        }
        // SAFETY: the map is only read. Like every memory-mapped loader, this
        // relies on no process truncating or rewriting the file while it is
        // open, because reads past a truncation fault (SIGBUS).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = parse(path, &mmap)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            mmap,
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            metadata: header.metadata,
            tensors: header.tensors,
            index: header.index,
        })
    }

    /// Returns the path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Returns the data alignment: `general.alignment`, or 32 without it.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Returns the byte offset of the data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Returns all metadata entries by key.
    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    /// Returns the metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// Returns the tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Returns the info of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// Returns the raw bytes of a tensor's data.
    ///
    /// Errors with [`Error::Unsupported`] when the type's block layout is
    /// unknown, and with [`Error::Format`] when the range lies outside the
    /// file (possible only for a tensor info that is not from this file).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8]> {
        let n_bytes = info.n_bytes().ok_or_else(|| {
            Error::Unsupported(format!(
                "tensor {} has type {} ({}) with dims {:?}, whose data size is unknown to this \
                 reader",
                info.name,
                info.ggml_type,
                info.ggml_type.id(),
                info.dims
            ))
        })?;
        let file_len = self.mmap.len() as u64;
        let range = self
            .data_offset
            .checked_add(info.offset)
            .and_then(|start| Some(start..start.checked_add(n_bytes)?))
            .filter(|range| range.end <= file_len)
            .ok_or_else(|| {
                self.format_error(format!(
                    "data of tensor {} ({} bytes at data offset {}) extends past the end of the \
                     file ({} bytes)",
                    info.name, n_bytes, info.offset, file_len
                ))
            })?;
        Ok(&self.mmap[range.start as usize..range.end as usize])
    }

    /// Dequantizes a tensor to an f32 CPU tensor of shape
    /// [`TensorInfo::torch_shape`].
    pub fn dequantize(&self, info: &TensorInfo) -> Result<tch::Tensor> {
        if !info.ggml_type.can_dequantize() {
            return Err(Error::Unsupported(format!(
                "tensor {} has type {} ({}), which this reader cannot dequantize; supported: {}",
                info.name,
                info.ggml_type,
                info.ggml_type.id(),
                supported_type_names()
            )));
        }
        let bytes = self.tensor_bytes(info)?;
        let n = usize::try_from(info.n_elements()).map_err(|_| {
            Error::InvalidInput(format!(
                "tensor {} has {} elements, more than this platform can address",
                info.name,
                info.n_elements()
            ))
        })?;
        let values = dequantize(info.ggml_type, bytes, n)?;
        let tensor = tch::Tensor::f_from_slice(&values)?.f_reshape(info.torch_shape())?;
        Ok(tensor)
    }

    fn format_error(&self, message: String) -> Error {
        Error::format(&self.path, FORMAT, message)
    }
}

/// Dequantizes the first `n` elements of `ggml_type` stored in `bytes`.
///
/// Errors with [`Error::Unsupported`] for a type that
/// [`GgmlType::can_dequantize`] rejects, and with [`Error::InvalidInput`] when
/// `n` is not a multiple of the block size or `bytes` is too short.
pub fn dequantize(ggml_type: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    // Validate before allocating, so that a wrong `n` cannot allocate much.
    check_lengths(ggml_type, bytes.len(), n)?;
    let mut out = vec![0f32; n];
    dequantize_into(ggml_type, bytes, &mut out)?;
    Ok(out)
}

/// Dequantizes `out.len()` elements of `ggml_type` stored in `bytes` into
/// `out`, with the errors of [`dequantize`].
pub fn dequantize_into(ggml_type: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let needed = check_lengths(ggml_type, bytes.len(), out.len())?;
    let bytes = &bytes[..needed];
    match ggml_type {
        GgmlType::F32 => {
            for (x, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => dequantize_f16(bytes, out),
        GgmlType::BF16 => {
            for (x, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *x = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => for_each_block(bytes, out, block_q4_0),
        GgmlType::Q4_1 => for_each_block(bytes, out, block_q4_1),
        GgmlType::Q5_0 => for_each_block(bytes, out, block_q5_0),
        GgmlType::Q5_1 => for_each_block(bytes, out, block_q5_1),
        GgmlType::Q8_0 => for_each_block(bytes, out, block_q8_0),
        GgmlType::Q2_K => for_each_block(bytes, out, block_q2_k),
        GgmlType::Q3_K => for_each_block(bytes, out, block_q3_k),
        GgmlType::Q4_K => for_each_block(bytes, out, block_q4_k),
        GgmlType::Q5_K => for_each_block(bytes, out, block_q5_k),
        GgmlType::Q6_K => for_each_block(bytes, out, block_q6_k),
        GgmlType::Q8_1 | GgmlType::Q8_K | GgmlType::Other(_) => {
            return Err(unsupported_type(ggml_type))
        }
    }
    Ok(())
}

/// Checks that `ggml_type` is supported, that `n` is a whole number of
/// blocks and that `n_bytes` covers them. Returns the bytes they occupy.
fn check_lengths(ggml_type: GgmlType, n_bytes: usize, n: usize) -> Result<usize> {
    if !ggml_type.can_dequantize() {
        return Err(unsupported_type(ggml_type));
    }
    // Supported types always have a layout, and their sizes fit in usize.
    let (block_size, type_size) = ggml_type.block_layout().unwrap_or((1, 1));
    let (block_size, type_size) = (block_size as usize, type_size as usize);
    if n % block_size != 0 {
        return Err(Error::InvalidInput(format!(
            "cannot dequantize {n} elements of {ggml_type}: the count must be a multiple of \
             the block size {block_size}"
        )));
    }
    let needed = (n / block_size).checked_mul(type_size);
    match needed {
        Some(needed) if needed <= n_bytes => Ok(needed),
        _ => Err(Error::InvalidInput(format!(
            "cannot dequantize {n} elements of {ggml_type} from {n_bytes} bytes: they need {} \
             bytes",
            needed.map_or("more than usize::MAX".to_string(), |b| b.to_string())
        ))),
    }
}

fn unsupported_type(ggml_type: GgmlType) -> Error {
    Error::Unsupported(format!(
        "type {} ({}) cannot be dequantized; supported: {}",
        ggml_type,
        ggml_type.id(),
        supported_type_names()
    ))
}

fn supported_type_names() -> String {
    let names: Vec<_> = SUPPORTED_TYPES.iter().map(|t| t.name()).collect();
    names.join(", ")
}
