//! Parsing of the GGUF header: metadata and tensor descriptions, every
//! length bounded by the bytes left in the file.

use super::*;

/// The parsed part of a file before the data section.
pub(super) struct Header {
    pub(super) version: u32,
    pub(super) alignment: u64,
    pub(super) data_offset: u64,
    pub(super) metadata: BTreeMap<String, Value>,
    pub(super) tensors: Vec<TensorInfo>,
    pub(super) index: HashMap<String, usize>,
}

/// A bounds-checked little-endian cursor over the mapped file.
pub(super) struct Cursor<'a> {
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

pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
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

pub(super) fn check_version(cur: &Cursor<'_>, version: u32) -> Result<()> {
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
pub(super) fn parse_metadata(
    cur: &mut Cursor<'_>,
    kv_count: usize,
) -> Result<(BTreeMap<String, Value>, u64)> {
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
pub(super) fn min_value_size(value_type: u32) -> Option<u64> {
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
pub(super) fn parse_value(
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

pub(super) fn parse_array(cur: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Value> {
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
pub(super) fn parse_tensor_infos(
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
pub(super) fn index_tensors(
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

pub(super) fn parse_tensor_info(
    cur: &mut Cursor<'_>,
    i: usize,
    alignment: u64,
) -> Result<TensorInfo> {
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
pub(super) fn parse_dims(cur: &mut Cursor<'_>, name: &str) -> Result<Vec<u64>> {
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

pub(super) fn check_data_range(
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
