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

// ---------------------------------------------------------------------------
// Header parsing

/// The parsed part of a file before the data section.
struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

/// A bounds-checked little-endian cursor over the mapped file.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, message: String) -> Error {
        Error::format(self.path, FORMAT, message)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Takes `n` bytes. `field` describes them for the truncation message.
    fn take(&mut self, n: usize, field: impl FnOnce() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(format!(
                "truncated file: {} at byte offset {} needs {} bytes but only {} remain \
                 (file size {})",
                field(),
                self.pos,
                n,
                self.remaining(),
                self.bytes.len()
            )));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: impl FnOnce() -> String) -> Result<[u8; N]> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N, field)?);
        Ok(array)
    }

    fn u32(&mut self, field: impl FnOnce() -> String) -> Result<u32> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: impl FnOnce() -> String) -> Result<u64> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// Reads a GGUF string (u64 length, then UTF-8 bytes).
    fn string(&mut self, field: impl Fn() -> String) -> Result<String> {
        let at = self.pos;
        let len = self.u64(|| format!("length of {}", field()))?;
        if len > self.remaining() as u64 {
            return Err(self.error(format!(
                "length {} of {} at byte offset {} exceeds the {} bytes left in the file \
                 (truncated or corrupt file)",
                len,
                field(),
                at,
                self.remaining()
            )));
        }
        let start = self.pos;
        let bytes = self.take(len as usize, &field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.error(format!(
                "{} at byte offset {} is not valid UTF-8 (invalid byte at offset {})",
                field(),
                at,
                start + e.valid_up_to()
            ))),
        }
    }

    /// Checks that `count` items of at least `min_size` bytes each fit in
    /// the rest of the file, so that a corrupt count cannot trigger a huge
    /// allocation or a long loop.
    fn check_count(&self, count: u64, min_size: u64, field: &str, at: usize) -> Result<usize> {
        let max = self.remaining() as u64 / min_size.max(1);
        if count > max {
            return Err(self.error(format!(
                "{field} {count} at byte offset {at} is too large: the {} bytes left in the file \
                 hold at most {max} (truncated or corrupt file)",
                self.remaining()
            )));
        }
        Ok(count as usize)
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
    let mut cur = Cursor {
        path,
        bytes,
        pos: 0,
    };
    let magic: [u8; 4] = cur.array(|| "magic".into())?;
    if &magic != MAGIC {
        return Err(cur.error(format!(
            "expected the magic \"GGUF\" at byte offset 0, found \"{}\": this is not a GGUF file",
            magic.escape_ascii()
        )));
    }
    let version = cur.u32(|| "version".into())?;
    check_version(&cur, version)?;
    let tensor_count_at = cur.pos;
    let tensor_count = cur.u64(|| "tensor count".into())?;
    let kv_count_at = cur.pos;
    let kv_count = cur.u64(|| "metadata entry count".into())?;
    let kv_count = cur.check_count(kv_count, MIN_KV_BYTES, "metadata entry count", kv_count_at)?;
    cur.check_count(
        tensor_count,
        MIN_TENSOR_INFO_BYTES,
        "tensor count",
        tensor_count_at,
    )?;

    let (metadata, alignment) = parse_metadata(&mut cur, kv_count)?;
    // Recheck against the bytes that the metadata left.
    let tensor_count = cur.check_count(
        tensor_count,
        MIN_TENSOR_INFO_BYTES,
        "tensor count",
        tensor_count_at,
    )?;
    let tensors = parse_tensor_infos(&mut cur, tensor_count, alignment)?;
    let index = index_tensors(&cur, &tensors)?;

    let end_of_infos = cur.pos as u64;
    let data_offset = end_of_infos.div_ceil(alignment) * alignment;
    // The padding after the last info may be missing when there is no data.
    let data_len = (bytes.len() as u64).saturating_sub(data_offset);
    for (info, at) in &tensors {
        check_data_range(&cur, info, *at, data_offset, data_len)?;
    }
    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        tensors: tensors.into_iter().map(|(info, _)| info).collect(),
        index,
    })
}

fn check_version(cur: &Cursor<'_>, version: u32) -> Result<()> {
    match version {
        2 | 3 => Ok(()),
        1 => Err(cur.error(
            "GGUF version 1 at byte offset 4 is not supported (only versions 2 and 3 are): \
             convert the file with a current llama.cpp"
                .into(),
        )),
        v if matches!(v.swap_bytes(), 2 | 3) => Err(cur.error(format!(
            "version field {v} at byte offset 4 is version {} stored big-endian; \
             big-endian GGUF files are not supported",
            v.swap_bytes()
        ))),
        v => Err(cur.error(format!(
            "unsupported GGUF version {v} at byte offset 4 (only versions 2 and 3 are supported)"
        ))),
    }
}

/// Parses the metadata entries and returns them with the data alignment.
fn parse_metadata(cur: &mut Cursor<'_>, kv_count: usize) -> Result<(BTreeMap<String, Value>, u64)> {
    let mut metadata = BTreeMap::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for i in 0..kv_count {
        let key_at = cur.pos;
        let key = cur.string(|| format!("key of metadata entry {i}"))?;
        let type_at = cur.pos;
        let value_type = cur.u32(|| format!("value type of key {key}"))?;
        let value = parse_value(cur, value_type, type_at, &key, 0)?;
        if key == "general.alignment" {
            alignment = match value {
                Value::U32(a) if a.is_power_of_two() => a.into(),
                ref other => {
                    return Err(cur.error(format!(
                        "general.alignment at byte offset {key_at} is {other:?}; it must be a \
                         u32 power of two"
                    )))
                }
            };
        }
        if metadata.insert(key.clone(), value).is_some() {
            return Err(cur.error(format!(
                "duplicate metadata key {key} at byte offset {key_at}"
            )));
        }
    }
    Ok((metadata, alignment))
}

/// Smallest encoded size of a value of GGUF value type `value_type`.
fn min_value_size(value_type: u32) -> Option<u64> {
    match value_type {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        8 | 10..=12 => Some(8),
        // Item type and count.
        9 => Some(12),
        _ => None,
    }
}

/// Parses one value of GGUF value type `value_type`, read at `type_at`.
/// `key` and `depth` locate the value for error messages and bound nesting.
fn parse_value(
    cur: &mut Cursor<'_>,
    value_type: u32,
    type_at: usize,
    key: &str,
    depth: usize,
) -> Result<Value> {
    let field = || format!("value of key {key}");
    let value = match value_type {
        0 => Value::U8(u8::from_le_bytes(cur.array(field)?)),
        1 => Value::I8(i8::from_le_bytes(cur.array(field)?)),
        2 => Value::U16(u16::from_le_bytes(cur.array(field)?)),
        3 => Value::I16(i16::from_le_bytes(cur.array(field)?)),
        4 => Value::U32(u32::from_le_bytes(cur.array(field)?)),
        5 => Value::I32(i32::from_le_bytes(cur.array(field)?)),
        6 => Value::F32(f32::from_le_bytes(cur.array(field)?)),
        // A bool is one byte, and any non-zero byte is true.
        7 => Value::Bool(u8::from_le_bytes(cur.array(field)?) != 0),
        8 => Value::String(cur.string(field)?),
        9 => parse_array(cur, key, depth)?,
        10 => Value::U64(u64::from_le_bytes(cur.array(field)?)),
        11 => Value::I64(i64::from_le_bytes(cur.array(field)?)),
        12 => Value::F64(f64::from_le_bytes(cur.array(field)?)),
        other => {
            return Err(cur.error(format!(
                "unknown value type {other} for key {key} at byte offset {type_at} \
                 (GGUF value types are 0 to 12)"
            )))
        }
    };
    Ok(value)
}

fn parse_array(cur: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Value> {
    let array_at = cur.pos;
    if depth >= MAX_ARRAY_DEPTH {
        return Err(cur.error(format!(
            "array value of key {key} at byte offset {array_at} is nested more than \
             {MAX_ARRAY_DEPTH} levels deep"
        )));
    }
    let item_type = cur.u32(|| format!("array item type of key {key}"))?;
    let count_at = cur.pos;
    let count = cur.u64(|| format!("array length of key {key}"))?;
    let min_size = min_value_size(item_type).ok_or_else(|| {
        cur.error(format!(
            "unknown array item type {item_type} for key {key} at byte offset {array_at} \
             (GGUF value types are 0 to 12)"
        ))
    })?;
    let field = format!("array length of key {key}");
    let count = cur.check_count(count, min_size, &field, count_at)?;
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(parse_value(cur, item_type, array_at, key, depth + 1)?);
    }
    Ok(Value::Array(items))
}

/// Parses the tensor infos. Returns each with the byte offset it was read at.
fn parse_tensor_infos(
    cur: &mut Cursor<'_>,
    count: usize,
    alignment: u64,
) -> Result<Vec<(TensorInfo, usize)>> {
    let mut tensors = Vec::with_capacity(count);
    for i in 0..count {
        let at = cur.pos;
        tensors.push((parse_tensor_info(cur, i, alignment)?, at));
    }
    Ok(tensors)
}

/// Maps each tensor name to its position, rejecting duplicate names.
fn index_tensors(
    cur: &Cursor<'_>,
    tensors: &[(TensorInfo, usize)],
) -> Result<HashMap<String, usize>> {
    let mut index = HashMap::with_capacity(tensors.len());
    for (i, (info, at)) in tensors.iter().enumerate() {
        if index.insert(info.name.clone(), i).is_some() {
            return Err(cur.error(format!(
                "duplicate tensor name {} at byte offset {at}",
                info.name
            )));
        }
    }
    Ok(index)
}

fn parse_tensor_info(cur: &mut Cursor<'_>, i: usize, alignment: u64) -> Result<TensorInfo> {
    let name = cur.string(|| format!("name of tensor {i}"))?;
    let dims = parse_dims(cur, &name)?;

    let type_at = cur.pos;
    let ggml_type = GgmlType::from_id(cur.u32(|| format!("type of tensor {name}"))?);
    if let (Some((block_size, _)), Some(&row)) = (ggml_type.block_layout(), dims.first()) {
        if row % block_size != 0 {
            return Err(cur.error(format!(
                "tensor {name} of type {ggml_type} has rows of {row} elements (byte offset \
                 {type_at}), not a multiple of the block size {block_size}"
            )));
        }
    }

    let offset_at = cur.pos;
    let offset = cur.u64(|| format!("data offset of tensor {name}"))?;
    if offset % alignment != 0 {
        return Err(cur.error(format!(
            "data offset {offset} of tensor {name} at byte offset {offset_at} is not a multiple \
             of the alignment {alignment}"
        )));
    }
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
    })
}

/// Parses the dimension count and dimensions of tensor `name`, and checks
/// that the element count fits in an `i64` (the element count type of torch).
fn parse_dims(cur: &mut Cursor<'_>, name: &str) -> Result<Vec<u64>> {
    let n_dims_at = cur.pos;
    let n_dims = cur.u32(|| format!("dimension count of tensor {name}"))?;
    if n_dims > MAX_DIMS {
        return Err(cur.error(format!(
            "tensor {name} has {n_dims} dimensions (byte offset {n_dims_at}), but GGUF allows \
             at most {MAX_DIMS}"
        )));
    }

    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        let dim_at = cur.pos;
        let dim = cur.u64(|| format!("dimensions of tensor {name}"))?;
        if dim > i64::MAX as u64 {
            return Err(cur.error(format!(
                "dimension {dim} of tensor {name} at byte offset {dim_at} exceeds i64::MAX"
            )));
        }
        dims.push(dim);
    }

    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64);
    if n_elements.is_none() {
        return Err(cur.error(format!(
            "element count of tensor {name} with dims {dims:?} (byte offset {n_dims_at}) \
             overflows i64"
        )));
    }
    Ok(dims)
}

fn check_data_range(
    cur: &Cursor<'_>,
    info: &TensorInfo,
    at: usize,
    data_offset: u64,
    data_len: u64,
) -> Result<()> {
    // parse_tensor_info has checked that rows are whole blocks, so n_bytes
    // is None only for an unknown type or a size that overflows u64.
    let size = info.n_bytes();
    let end = match (info.ggml_type.block_layout(), size) {
        // Only the start can be checked for a type of unknown size.
        (None, _) => Some(info.offset),
        (Some(_), size) => size.and_then(|size| info.offset.checked_add(size)),
    };
    if end.is_some_and(|end| end <= data_len) {
        return Ok(());
    }
    let size = match (info.ggml_type.block_layout(), size) {
        (None, _) => "an unknown size".to_string(),
        (Some(_), Some(size)) => format!("{size} bytes"),
        (Some(_), None) => "a size that overflows u64".to_string(),
    };
    Err(cur.error(format!(
        "data of tensor {} (info at byte offset {at}) at data offset {} with {size} of type {} \
         extends past the end of the file: the data section starts at byte {data_offset} \
         and holds {data_len} bytes",
        info.name, info.offset, info.ggml_type
    )))
}

// ---------------------------------------------------------------------------
// Dequantization
//
// Each `block_*` function decodes one block and mirrors the matching
// `dequantize_row_*` of ggml-quants.c, including the order of the f32
// operations, so that results are bit-identical to ggml and gguf-py.

/// Applies `decode` to each block of `bytes` and the matching slice of `out`.
/// The caller has checked that `bytes` holds exactly the blocks of `out`.
fn for_each_block<const BYTES: usize, const N: usize>(
    bytes: &[u8],
    out: &mut [f32],
    decode: impl Fn(&[u8; BYTES], &mut [f32; N]),
) {
    for (block, y) in bytes.chunks_exact(BYTES).zip(out.chunks_exact_mut(N)) {
        // Both conversions succeed because chunks_exact yields exact sizes.
        if let (Ok(block), Ok(y)) = (block.try_into(), y.try_into()) {
            decode(block, y);
        }
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Converts f16 values in chunks so that half's vectorized slice conversion
/// does the work. Copying each chunk into a buffer avoids casting the data to
/// `&[f16]`, which could be misaligned when `general.alignment` is 1.
fn dequantize_f16(bytes: &[u8], out: &mut [f32]) {
    const CHUNK: usize = 64;
    let mut buf = [f16::ZERO; CHUNK];
    for (src, dst) in bytes.chunks(2 * CHUNK).zip(out.chunks_mut(CHUNK)) {
        let buf = &mut buf[..dst.len()];
        for (h, b) in buf.iter_mut().zip(src.chunks_exact(2)) {
            *h = f16::from_le_bytes([b[0], b[1]]);
        }
        buf.convert_to_f32_slice(dst);
    }
}

/// Q4_0: f16 scale `d`, then 16 bytes of 4-bit quants. The low nibbles are
/// elements 0..16 and the high nibbles elements 16..32. Each value is
/// (q - 8) * d.
fn block_q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1: f16 scale `d` and minimum `m`, then nibbles as in Q4_0. Each value
/// is q * d + m.
fn block_q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// Q5_0: f16 `d`, a u32 whose bit i is the fifth bit of element i, then
/// nibbles as in Q4_0. Each value is (q - 16) * d.
fn block_q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = (((qh >> j) & 1) << 4) as u8;
        let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
        y[j] = (((qs[j] & 0x0F) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

/// Q5_1: f16 `d` and `m`, the fifth bits as in Q5_0, then nibbles. Each value
/// is q * d + m.
fn block_q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = (((qh >> j) & 1) << 4) as u8;
        let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
        y[j] = ((qs[j] & 0x0F) | h0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | h1) as f32 * d + m;
    }
}

/// Q8_0: f16 `d`, then 32 signed bytes. Each value is q * d.
fn block_q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (x, &q) in y.iter_mut().zip(&b[2..34]) {
        *x = q as i8 as f32 * d;
    }
}

/// Q2_K: 16 bytes of 4-bit scale (low) and min (high) pairs, 64 bytes of
/// 2-bit quants, then f16 `d` and `dmin`. Each 128-element half reads its 32
/// quant bytes four times, at bit shifts 0, 2, 4 and 6. Every 16 elements
/// take the next scale byte, and each value is d * scale * q - dmin * min.
fn block_q2_k(b: &[u8; 84], y: &mut [f32; QK_K]) {
    let scales = &b[0..16];
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    let mut out = 0;
    let mut is = 0;
    for half in 0..2 {
        let q = &b[16 + 32 * half..16 + 32 * half + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                for &byte in &q[16 * part..16 * part + 16] {
                    y[out] = dl * ((byte >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

/// Unpacks the sixteen 6-bit Q3_K scales: the low 4 bits come from the
/// nibbles of bytes 0..8 (low nibbles first), the high 2 bits from bytes
/// 8..12 at shifts 0, 2, 4 and 6. Scales are stored with an offset of 32.
fn q3_k_scales(packed: &[u8]) -> [i32; 16] {
    let mut scales = [0i32; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let low = if i < 8 {
            packed[i] & 0x0F
        } else {
            packed[i - 8] >> 4
        };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        *s = (low | (high << 4)) as i32 - 32;
    }
    scales
}

/// Q3_K: 32 bytes of high-bit masks, 64 bytes of 2-bit quants, 12 bytes of
/// packed 6-bit scales, then f16 `d`. The quants are laid out as in Q2_K.
/// Element e takes bit e / 32 of mask byte e % 32, and a clear bit subtracts
/// 4 from its quant. Each value is d * (scale - 32) * q.
fn block_q3_k(b: &[u8; 110], y: &mut [f32; QK_K]) {
    let hmask = &b[0..32];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    let mut out = 0;
    let mut is = 0;
    let mut mask = 1u8;
    for half in 0..2 {
        let q = &b[32 + 32 * half..32 + 32 * half + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let dl = d * scales[is] as f32;
                is += 1;
                for l in 16 * part..16 * part + 16 {
                    let low = ((q[l] >> shift) & 3) as i32;
                    let high = if hmask[l] & mask != 0 { 0 } else { 4 };
                    y[out] = dl * (low - high) as f32;
                    out += 1;
                }
            }
            mask <<= 1;
        }
    }
}

/// Returns the 6-bit scale and min of sub-block `j` (0..8) from the 12
/// packed bytes shared by Q4_K and Q5_K (`get_scale_min_k4` in ggml).
fn k4_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: f16 `d` and `dmin`, 12 bytes of packed 6-bit scales and mins, then
/// 128 bytes of nibbles. Each 64-element group reads 32 bytes, low nibbles
/// first, with its own two scale/min pairs. Each value is
/// d * scale * q - dmin * min.
fn block_q4_k(b: &[u8; 144], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    for group in 0..4 {
        let q = &b[16 + 32 * group..16 + 32 * group + 32];
        let (sc1, m1) = k4_scale_min(2 * group, scales);
        let (sc2, m2) = k4_scale_min(2 * group + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let y = &mut y[64 * group..64 * group + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0x0F) as f32 - min1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - min2;
        }
    }
}

/// Q5_K: Q4_K with 32 bytes of fifth bits before the nibbles. Element e
/// takes bit e / 32 of byte e % 32 of those.
fn block_q5_k(b: &[u8; 176], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    for group in 0..4 {
        let ql = &b[48 + 32 * group..48 + 32 * group + 32];
        let (sc1, m1) = k4_scale_min(2 * group, scales);
        let (sc2, m2) = k4_scale_min(2 * group + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let (bit1, bit2) = (2 * group, 2 * group + 1);
        let y = &mut y[64 * group..64 * group + 64];
        for l in 0..32 {
            let h1 = ((qh[l] >> bit1) & 1) << 4;
            let h2 = ((qh[l] >> bit2) & 1) << 4;
            y[l] = d1 * ((ql[l] & 0x0F) | h1) as f32 - min1;
            y[l + 32] = d2 * ((ql[l] >> 4) | h2) as f32 - min2;
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 signed
/// 8-bit scales (one per 16 elements), then f16 `d`. Each 128-element half
/// uses 64 low bytes and 32 high bytes. Its element l + 32k (l < 32, k < 4)
/// takes the low nibble (k < 2) or high nibble (k >= 2) of low byte
/// l + 32 (k % 2), and bits 2k and 2k + 1 of high byte l. Each value is
/// d * scale * (q - 32).
fn block_q6_k(b: &[u8; 210], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * sc[is] as i8 as f32 * q1 as f32;
            y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
            y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
            y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn type_ids_round_trip() {
        for id in 0..64 {
            assert_eq!(GgmlType::from_id(id).id(), id);
        }
        assert_eq!(GgmlType::from_id(12), GgmlType::Q4_K);
        assert_eq!(GgmlType::from_id(30), GgmlType::BF16);
        assert_eq!(GgmlType::Q4_K.name(), "Q4_K");
        assert_eq!(GgmlType::from_id(16).name(), "IQ2_XXS");
        assert_eq!(GgmlType::from_id(39).name(), "MXFP4");
        assert_eq!(GgmlType::from_id(99).name(), "type 99");
    }

    #[test]
    fn value_accessors_convert_integers() {
        assert_eq!(Value::I32(-1).as_u64(), None);
        assert_eq!(Value::I32(7).as_u64(), Some(7));
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::U8(3).as_f64(), Some(3.0));
        assert_eq!(Value::F32(0.5).as_f64(), Some(0.5));
        assert_eq!(Value::F32(0.5).as_i64(), None);
        assert_eq!(Value::Bool(true).as_u64(), None);
        assert_eq!(Value::String("a".into()).as_str(), Some("a"));
    }

    #[test]
    fn q4_0_low_nibbles_first() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&f16_bytes(0.5));
        for j in 0..16 {
            b[2 + j] = j as u8 | ((15 - j as u8) << 4);
        }
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5, "element {j}");
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5, "element {}", j + 16);
        }
    }

    #[test]
    fn q5_1_fifth_bit_per_element() {
        let mut b = [0u8; 24];
        b[..2].copy_from_slice(&f16_bytes(1.0));
        b[2..4].copy_from_slice(&f16_bytes(-2.0));
        // Fifth bit set for elements 1 and 17 only.
        b[4..8].copy_from_slice(&((1u32 << 1) | (1 << 17)).to_le_bytes());
        b[8 + 1] = 0x33;
        let y = dequantize(GgmlType::Q5_1, &b, 32).unwrap();
        assert_eq!(y[0], -2.0);
        assert_eq!(y[1], 16.0 + 3.0 - 2.0);
        assert_eq!(y[16], -2.0);
        assert_eq!(y[17], 16.0 + 3.0 - 2.0);
        assert_eq!(y[18], -2.0);
    }

    #[test]
    fn q8_0_signed_quants() {
        let mut b = [0u8; 34];
        b[..2].copy_from_slice(&f16_bytes(0.25));
        b[2] = (-128i8) as u8;
        b[33] = 127;
        let y = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        assert_eq!(y[0], -32.0);
        assert_eq!(y[1], 0.0);
        assert_eq!(y[31], 31.75);
    }

    #[test]
    fn k4_scales_unpack_high_bits() {
        // Sub-block 5: scale = low nibble of byte 9 | top bits of byte 1,
        // min = high nibble of byte 9 | top bits of byte 5.
        let mut q = [0u8; 12];
        q[1] = 0b1100_0000;
        q[5] = 0b0100_0000;
        q[9] = 0xA3;
        assert_eq!(k4_scale_min(5, &q), (0x33, 0x1A));
        q[0] = 0xFF;
        q[4] = 0x80 | 5;
        assert_eq!(k4_scale_min(0, &q), (63, 5));
    }

    #[test]
    fn q3_k_scales_unpack_offset() {
        let mut packed = [0u8; 12];
        packed[0] = 0x21; // scale 0 low = 1, scale 8 low = 2
        packed[8] = 0b0000_0011 | (0b10 << 4); // scale 0 high = 3, scale 8 high = 2
        let scales = q3_k_scales(&packed);
        assert_eq!(scales[0], (1 | (3 << 4)) - 32);
        assert_eq!(scales[8], (2 | (2 << 4)) - 32);
        assert_eq!(scales[1], -32);
    }

    #[test]
    fn q6_k_element_order() {
        let mut b = [0u8; 210];
        b[208..210].copy_from_slice(&f16_bytes(1.0));
        for s in &mut b[192..208] {
            *s = 1;
        }
        // Low byte 32 contains element 32 (low nibble) and element 96 (high).
        b[32] = 0x21;
        // High byte 0 contains the high bits of elements 0, 32, 64 and 96.
        b[128] = 0b11_00_01_00;
        let y = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
        assert_eq!(y[0], -32.0);
        assert_eq!(y[32], (1 + 16 - 32) as f32);
        assert_eq!(y[64], -32.0);
        assert_eq!(y[96], (2 + 48 - 32) as f32);
    }

    #[test]
    fn dequantize_rejects_bad_lengths() {
        let err = dequantize(GgmlType::Q4_0, &[0u8; 18], 16).unwrap_err();
        assert!(
            err.to_string().contains("multiple of the block size 32"),
            "{err}"
        );
        let err = dequantize(GgmlType::Q4_0, &[0u8; 35], 64).unwrap_err();
        assert!(err.to_string().contains("need 36 bytes"), "{err}");
        let err = dequantize(GgmlType::from_id(20), &[0u8; 18], 32).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("IQ4_NL"), "{err}");
    }
}
