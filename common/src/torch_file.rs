//! Reads the tensors of PyTorch `torch.save` files without running code from
//! the file.
//!
//! Since PyTorch 1.6, `torch.save` writes a zip archive whose entries share
//! one top-level directory. `data.pkl` in it is a pickle of the saved object.
//! Each tensor in the pickle refers, through a persistent id, to the raw
//! bytes of its storage in `data/<key>`, and `byteorder` names the byte
//! order of those bytes.
//!
//! A pickle is a program for a stack machine that can import and call any
//! Python function, so this module runs its own machine with a fixed set of
//! constructors. It builds tensors, lists, tuples, dicts and sets, and builds
//! instances of the module classes under `torch.nn.modules.` and `dall_e.` as
//! inert records of their class name and state. It rejects every other
//! global (`os.system`, `builtins.eval`, ...) as soon as the pickle names it,
//! and rejects the opcodes that name a class inline or through the extension
//! registry (INST, OBJ, EXT1, EXT2, EXT4) and text persistent ids (PERSID).
//!
//! Every length and index in the file is checked before it is used, so a
//! corrupt or crafted file gives an [`Error`], never a panic, an abort in
//! libtorch or an allocation larger than the file allows.

use crate::{Error, Result};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use tch::{Kind, Tensor};
use zip::result::ZipError;
use zip::{CompressionMethod, ZipArchive};

/// The tensors of a `torch.save` file and what its root object is.
#[derive(Debug)]
pub struct TorchFile {
    /// Tensors in file order (the order of the dict, or `state_dict()` order
    /// for a module), named by their state-dict names
    /// ("blocks.group_1.block_1.res_path.conv_1.w"). Each tensor is a
    /// contiguous CPU copy of its own, even where the file shares a storage
    /// between tensors.
    pub tensors: Vec<(String, Tensor)>,
    /// "module.Class" of the root object when it is a pickled module (e.g.
    /// "dall_e.encoder.Encoder"), None for a dict.
    pub root_class: Option<String>,
    /// The integer (and bool as 0/1) attributes of the root object's state,
    /// e.g. n_hid, vocab_size. Empty for a dict.
    pub root_ints: BTreeMap<String, i64>,
}

/// Reads the tensors of a `torch.save` file.
///
/// The root object must be a dict (a state dict, or a checkpoint dict with
/// state dicts nested inside it) or a pickled `torch.nn` or `dall_e` module.
/// A dict names each tensor by its chain of keys joined with ".". A module
/// names its tensors as `state_dict()` does, in the same order: parameters,
/// then persistent buffers, then submodules. Values that are neither
/// tensors, dicts nor modules (numbers, strings, lists) are skipped.
///
/// Returns [`Error::Unsupported`] for a file that this reader declines on
/// purpose: a global outside its allow-list, the legacy pre-1.6 format, a
/// big-endian archive or a compressed entry. Returns [`Error::Format`] for a
/// file that is corrupt or inconsistent, and [`Error::Io`] for a file that
/// cannot be read.
pub fn read(path: &Path) -> Result<TorchFile> {
    let mut archive = Archive::open(path)?;
    let pickle_name = archive.pickle_name.clone();
    let pickle = archive.read_entry(&pickle_name, None)?;
    let mut machine = Machine::new(path, &pickle_name, &pickle);
    let root = machine.run()?;
    let named = collect_names(path, &machine, root)?;
    check_output_size(path, archive.file_len, &named.tensors)?;
    let tensors = build_tensors(&mut archive, &named.tensors)?;
    Ok(TorchFile {
        tensors,
        root_class: named.root_class,
        root_ints: named.root_ints,
    })
}

const FORMAT: &str = "PyTorch";

fn format_error(path: &Path, message: impl Into<String>) -> Error {
    Error::format(path, FORMAT, message)
}

fn unsupported(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("{}: {message}", path.display()))
}

// The archive.

/// The first bytes of a legacy (PyTorch < 1.6) file: a protocol 2 pickle of
/// the magic number 0x1950a86a20f9469cfc6c as a 10-byte LONG1.
const LEGACY_MAGIC: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];

/// An open `torch.save` archive.
struct Archive<'a> {
    path: &'a Path,
    zip: ZipArchive<BufReader<File>>,
    /// The size of the file, which bounds every entry that is read.
    file_len: u64,
    /// `<prefix>/data.pkl`.
    pickle_name: String,
    /// `<prefix>`, the directory that contains every entry.
    prefix: String,
    /// The bytes read so far from storage entries. Distinct entries of an
    /// archive without compression never add up to more than the file, so a
    /// larger sum means that entries overlap.
    storage_bytes_read: u64,
}

impl<'a> Archive<'a> {
    fn open(path: &'a Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut start = Vec::with_capacity(LEGACY_MAGIC.len());
        (&mut file)
            .take(LEGACY_MAGIC.len() as u64)
            .read_to_end(&mut start)
            .map_err(|e| Error::io(path, e))?;
        check_magic(path, &start)?;

        let reader = BufReader::new(file);
        let zip = ZipArchive::new(reader).map_err(|e| {
            format_error(
                path,
                format!(
                    "not a readable zip archive ({}): the file is truncated or corrupt",
                    zip_message(&e)
                ),
            )
        })?;
        let pickle_name = find_pickle(path, &zip)?;
        let prefix = pickle_name
            .strip_suffix("/data.pkl")
            .unwrap_or_default()
            .to_string();
        let mut archive = Archive {
            path,
            zip,
            file_len,
            pickle_name,
            prefix,
            storage_bytes_read: 0,
        };
        archive.check_byte_order()?;
        Ok(archive)
    }

    /// Rejects an archive whose `byteorder` entry is not "little". An archive
    /// without the entry is read as little-endian, as `torch.load` of
    /// PyTorch 2.13 does by default.
    fn check_byte_order(&mut self) -> Result<()> {
        let name = format!("{}/byteorder", self.prefix);
        if self.zip.index_for_name(&name).is_none() {
            return Ok(());
        }
        let bytes = self.read_entry(&name, None)?;
        let order = String::from_utf8_lossy(&bytes);
        match order.trim() {
            "little" => Ok(()),
            "big" => Err(unsupported(
                self.path,
                "the tensors are stored big-endian, and this reader reads only little-endian \
                 files: load the file with PyTorch on a big-endian machine and save it again \
                 on a little-endian one",
            )),
            other => Err(format_error(
                self.path,
                format!("{name} contains {other:?}, expected \"little\" or \"big\""),
            )),
        }
    }

    /// Reads a whole entry. With `expected_len`, an entry of another size is
    /// an error reported before anything is read.
    fn read_entry(&mut self, name: &str, expected_len: Option<u64>) -> Result<Vec<u8>> {
        let path = self.path;
        let cannot_read = |e: ZipError| {
            format_error(
                path,
                format!("cannot read the entry {name}: {}", zip_message(&e)),
            )
        };

        let index = self
            .zip
            .index_for_name(name)
            .ok_or_else(|| format_error(path, format!("the archive has no entry {name}")))?;
        // The raw entry gives the compression method even where this build
        // of `zip` cannot decompress it.
        let (compression, size) = {
            let raw = self.zip.by_index_raw(index).map_err(cannot_read)?;
            (raw.compression(), raw.size())
        };

        if compression != CompressionMethod::Stored {
            return Err(unsupported(
                path,
                format!(
                    "the entry {name} is compressed, but torch.save writes uncompressed entries \
                     and this reader reads only those: save the file again with torch.save"
                ),
            ));
        }
        if let Some(expected) = expected_len {
            if size != expected {
                return Err(format_error(
                    path,
                    format!(
                        "the entry {name} has {size} bytes, but the pickle declares {expected}"
                    ),
                ));
            }
        }
        if size > self.file_len {
            return Err(format_error(
                path,
                format!(
                    "the entry {name} declares {size} bytes, more than the {} bytes of the file",
                    self.file_len
                ),
            ));
        }

        // `size` is at most the file length, so this allocation is bounded by
        // the input.
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let entry = self.zip.by_index(index).map_err(cannot_read)?;
        entry
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| format_error(path, format!("cannot read the entry {name}: {e}")))?;
        if data.len() as u64 != size {
            return Err(format_error(
                path,
                format!(
                    "the entry {name} ends after {} of its {size} bytes: the file is truncated",
                    data.len()
                ),
            ));
        }
        Ok(data)
    }

    /// Reads the bytes of the storage `key`, which must be `expected_len`
    /// bytes long.
    fn read_storage(&mut self, key: &str, expected_len: u64) -> Result<Vec<u8>> {
        let name = format!("{}/data/{key}", self.prefix);
        if self.zip.index_for_name(&name).is_none() {
            return Err(format_error(
                self.path,
                format!("the storage {key} is missing: the archive has no entry {name}"),
            ));
        }
        let bytes = self.read_entry(&name, Some(expected_len))?;
        self.storage_bytes_read = self.storage_bytes_read.saturating_add(expected_len);
        if self.storage_bytes_read > self.file_len {
            return Err(format_error(
                self.path,
                format!(
                    "the storage entries add up to more than the {} bytes of the file, so \
                     entries overlap: the archive is corrupt",
                    self.file_len
                ),
            ));
        }
        Ok(bytes)
    }
}

/// Rejects files that are not zip archives, naming the legacy format.
fn check_magic(path: &Path, start: &[u8]) -> Result<()> {
    if start.starts_with(b"PK") {
        return Ok(());
    }
    if start == LEGACY_MAGIC {
        return Err(unsupported(
            path,
            "this is the legacy torch.save format of PyTorch before 1.6, which this reader \
             does not read: load it with PyTorch 1.6 or later and save it again with \
             torch.save, which writes a zip archive",
        ));
    }
    if start.first() == Some(&0x80) {
        return Err(unsupported(
            path,
            "this is a bare pickle, not the zip archive that torch.save writes since PyTorch \
             1.6: save the tensors again with torch.save",
        ));
    }
    let shown: Vec<String> = start.iter().take(4).map(|b| format!("{b:02x}")).collect();
    Err(format_error(
        path,
        format!(
            "not a zip archive: the file starts with the bytes [{}] instead of \"PK\"",
            shown.join(" ")
        ),
    ))
}

/// Returns the name of the one `<prefix>/data.pkl` entry of the archive.
fn find_pickle(path: &Path, zip: &ZipArchive<BufReader<File>>) -> Result<String> {
    let found: Vec<&str> = zip
        .file_names()
        .filter(|name| {
            name.strip_suffix("/data.pkl")
                .is_some_and(|prefix| !prefix.is_empty() && !prefix.contains('/'))
        })
        .collect();
    match found.as_slice() {
        [name] => Ok(name.to_string()),
        [] => Err(format_error(
            path,
            "the zip archive has no <name>/data.pkl entry, so it was not written by torch.save",
        )),
        names => Err(format_error(
            path,
            format!(
                "the zip archive has {} data.pkl entries ({}), expected one",
                names.len(),
                names.join(", ")
            ),
        )),
    }
}

/// Describes a zip error; the `Display` of an I/O error in `zip` omits the
/// underlying error.
fn zip_message(error: &ZipError) -> String {
    match error {
        ZipError::Io(e) => e.to_string(),
        e => e.to_string(),
    }
}

// The values of the pickle machine.

/// A value on the stack or in the memo. Containers and other objects live in
/// [`Machine::objects`] and are referred to by index, so that sharing and
/// mutation behave as in Python, cycles are harmless, and dropping a deeply
/// nested value never recurses.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// A float, whose value no tensor or name depends on.
    Float,
    Object(usize),
}

/// An object of the pickle. Strings and names are reference-counted so that
/// a pickle that reuses one long string many times cannot make copies of it.
#[derive(Debug)]
enum Object {
    Str(Rc<str>),
    /// A value that this reader never looks into: bytes, an integer beyond
    /// 64 bits, a `torch.device`.
    Opaque(&'static str),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// A dict as its entries in insertion order. Pickles that torch.save
    /// writes never repeat a key, and a repeated key in a crafted pickle
    /// gives a duplicate tensor name, which is an error.
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    /// `set(items)`, referring to the list, tuple or set `items` instead of
    /// copying it, so that a pickle cannot make many copies of one large
    /// list. Later appends to `items` show through, unlike in Python, which
    /// only matters for crafted pickles.
    SetOf(usize),
    Global(Global),
    /// An instance of a module class: its class name and the state that
    /// BUILD gave it (the instance `__dict__`).
    Module {
        class: Rc<str>,
        state: Option<Value>,
    },
    Storage(Rc<Storage>),
    Tensor(TensorSpec),
}

impl Object {
    fn kind_name(&self) -> &'static str {
        match self {
            Object::Str(_) => "string",
            Object::Opaque(name) => name,
            Object::Tuple(_) => "tuple",
            Object::List(_) => "list",
            Object::Dict(_) => "dict",
            Object::Set(_) | Object::SetOf(_) => "set",
            Object::Global(_) => "global",
            Object::Module { .. } => "module",
            Object::Storage(_) => "storage",
            Object::Tensor(_) => "tensor",
        }
    }
}

/// A global that the pickle may name. Anything else is rejected.
#[derive(Clone, Debug)]
enum Global {
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)`.
    RebuildTensor,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
    /// requires_grad, backward_hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor_v3(storage, offset, size, stride,
    /// requires_grad, backward_hooks, dtype[, metadata])`, written for dtypes
    /// without a typed storage class.
    RebuildTensorV3,
    /// `torch._utils._rebuild_parameter(data, requires_grad, backward_hooks)`
    /// and `_rebuild_parameter_with_state(..., state)`.
    RebuildParameter,
    OrderedDict,
    Set,
    Device,
    Size,
    /// A storage class: `torch.FloatStorage` and the like, or
    /// `torch.storage.UntypedStorage` (None).
    StorageClass(Option<Kind>),
    /// A dtype such as `torch.float32`.
    Dtype(Kind),
    /// A module class, as "module.Class".
    ModuleClass(Rc<str>),
}

/// Returns the global `module.name` if this reader allows it.
fn allowed_global(module: &str, name: &str) -> Option<Global> {
    let global = match (module, name) {
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            Global::RebuildParameter
        }
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("builtins" | "__builtin__", "set") => Global::Set,
        ("torch", "device") => Global::Device,
        ("torch", "Size") => Global::Size,
        ("torch" | "torch.storage", "UntypedStorage") => Global::StorageClass(None),
        ("torch", name) => {
            if let Some(kind) = storage_kind(name) {
                Global::StorageClass(Some(kind))
            } else {
                Global::Dtype(dtype_kind(name)?)
            }
        }
        (module, name)
            if module.starts_with("torch.nn.modules.") || module.starts_with("dall_e.") =>
        {
            Global::ModuleClass(format!("{module}.{name}").into())
        }
        _ => return None,
    };
    Some(global)
}

/// Returns the element kind of a typed storage class, as PyTorch 2.13 names
/// them in `torch.save` files.
fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        "ComplexFloatStorage" => Kind::ComplexFloat,
        "ComplexDoubleStorage" => Kind::ComplexDouble,
        _ => return None,
    })
}

/// Returns the kind of a dtype that pickles as `torch.<name>`.
fn dtype_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "float32" => Kind::Float,
        "float64" => Kind::Double,
        "float16" => Kind::Half,
        "bfloat16" => Kind::BFloat16,
        "int64" => Kind::Int64,
        "int32" => Kind::Int,
        "int16" => Kind::Int16,
        "int8" => Kind::Int8,
        "uint8" => Kind::Uint8,
        "bool" => Kind::Bool,
        "complex64" => Kind::ComplexFloat,
        "complex128" => Kind::ComplexDouble,
        "float8_e5m2" => Kind::Float8e5m2,
        "float8_e4m3fn" => Kind::Float8e4m3fn,
        "float8_e5m2fnuz" => Kind::Float8e5m2fnuz,
        "float8_e4m3fnuz" => Kind::Float8e4m3fnuz,
        _ => return None,
    })
}

/// A storage named by a persistent id: `("storage", storage_class, key,
/// location, numel)`. The location (such as "cuda:0") is ignored because
/// every tensor is read onto the CPU.
#[derive(Debug)]
struct Storage {
    key: Rc<str>,
    /// The element kind, or None for an untyped storage of bytes.
    kind: Option<Kind>,
    /// The size of the storage in bytes, checked against its entry.
    byte_len: u64,
}

/// A tensor as a strided view of a storage, checked to lie inside it. The
/// storage, size and stride are shared with the pickle's objects, so that
/// many tensors built from the same arguments cost little memory.
#[derive(Debug)]
struct TensorSpec {
    storage: Rc<Storage>,
    kind: Kind,
    /// The offset of the first element, in elements.
    offset: u64,
    /// The size of each dimension, each at most `i64::MAX`.
    size: Rc<[u64]>,
    /// The strides, in elements.
    stride: Rc<[u64]>,
    numel: u64,
}

impl TensorSpec {
    fn byte_len(&self) -> Option<u64> {
        self.numel.checked_mul(self.kind.elt_size_in_bytes() as u64)
    }
}

// The pickle machine.

/// Returns the name of an opcode of pickle protocols 0 to 5, for messages.
fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// The maximum number of arguments of the constructors that this reader
/// allows.
const MAX_CALL_ARGS: usize = 8;

/// The maximum length in bytes of the module and name of a global,
/// together, that this reader resolves.
const MAX_GLOBAL_LEN: usize = 1024;

/// The maximum number of dimensions of a tensor. PyTorch sets no limit, but
/// its CUDA kernels index at most 25 (`MAX_DIMS` in ATen's
/// OffsetCalculator.cuh).
const MAX_DIMS: usize = 64;

/// A pickle machine that builds only the values this module allows.
///
/// Each opcode adds at most one value to the stack, the memo and the object
/// table, and string and byte lengths are checked against the bytes that
/// remain, so memory stays proportional to the size of `data.pkl`.
struct Machine<'a> {
    path: &'a Path,
    /// The name of the pickle entry, for messages.
    entry: &'a str,
    data: &'a [u8],
    pos: usize,
    /// The offset of the opcode being run, for messages.
    op_start: usize,
    op: u8,
    stack: Vec<Value>,
    /// Stack lengths at each MARK that is still open.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Vec<Object>,
    /// The number of opcodes run, which bounds the walk that names tensors.
    op_count: u64,
    /// The sizes and strides converted so far, by tuple object.
    dims_by_tuple: HashMap<usize, Rc<[u64]>>,
    /// The globals resolved so far, by "module\nname", so that naming a
    /// global again creates no new object.
    globals: HashMap<String, Value>,
}

impl<'a> Machine<'a> {
    fn new(path: &'a Path, entry: &'a str, data: &'a [u8]) -> Self {
        Machine {
            path,
            entry,
            data,
            pos: 0,
            op_start: 0,
            op: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            objects: Vec::new(),
            op_count: 0,
            dims_by_tuple: HashMap::new(),
            globals: HashMap::new(),
        }
    }

    fn op_name(&self) -> String {
        match opcode_name(self.op) {
            Some(name) => name.to_string(),
            None => format!("0x{:02x}", self.op),
        }
    }

    /// Builds an error at the current opcode, for a corrupt or inconsistent
    /// pickle.
    fn error(&self, message: impl std::fmt::Display) -> Error {
        format_error(
            self.path,
            format!(
                "{} at byte {} ({}): {message}",
                self.entry,
                self.op_start,
                self.op_name()
            ),
        )
    }

    /// Builds an error at the current opcode, for a pickle that this reader
    /// declines to run.
    fn rejected(&self, message: impl std::fmt::Display) -> Error {
        unsupported(
            self.path,
            format!(
                "{} at byte {} ({}): {message}",
                self.entry,
                self.op_start,
                self.op_name()
            ),
        )
    }

    fn alloc(&mut self, object: Object) -> Value {
        self.objects.push(object);
        Value::Object(self.objects.len() - 1)
    }

    fn object(&self, value: Value) -> Option<&Object> {
        match value {
            Value::Object(index) => Some(&self.objects[index]),
            _ => None,
        }
    }

    fn kind_name(&self, value: Value) -> &'static str {
        match value {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Object(index) => self.objects[index].kind_name(),
        }
    }

    fn str_of(&self, value: Value) -> Option<&str> {
        match self.object(value) {
            Some(Object::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn rc_str_of(&self, value: Value) -> Option<Rc<str>> {
        match self.object(value) {
            Some(Object::Str(s)) => Some(s.clone()),
            _ => None,
        }
    }

    // Reading operands.

    fn take(&mut self, len: u64) -> Result<&'a [u8]> {
        let remaining = self.data.len() - self.pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= remaining)
            .ok_or_else(|| {
                self.error(format!(
                    "the operand needs {len} bytes but only {remaining} remain: the pickle is \
                     truncated"
                ))
            })?;
        let bytes = &self.data[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N as u64)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn read_u8(&mut self) -> Result<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn read_u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn read_u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// Reads a line of the GLOBAL opcode, without its newline.
    fn read_line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let len = rest.iter().position(|&b| b == b'\n').ok_or_else(|| {
            self.error("the operand has no terminating newline: the pickle is truncated")
        })?;
        let line = self.take(len as u64)?;
        self.pos += 1;
        std::str::from_utf8(line).map_err(|_| self.error("the operand is not valid UTF-8"))
    }

    fn read_str(&mut self, len: u64) -> Result<Value> {
        let bytes = self.take(len)?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| self.error("the string is not valid UTF-8"))?;
        Ok(self.alloc(Object::Str(text.into())))
    }

    // The stack. Like Python's unpickler, pops never reach below the last
    // open MARK.

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.error("the stack is empty"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.error("the stack is empty"))
    }

    fn top(&self) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(self.error("the stack is empty"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.error("the stack is empty"))
    }

    /// Pops the values above the last MARK, and the MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.error("no MARK is open"))?;
        Ok(self.stack.split_off(mark))
    }

    fn push(&mut self, value: Value) {
        self.stack.push(value);
    }

    // Running.

    /// Runs the pickle to its STOP opcode and returns the root object.
    fn run(&mut self) -> Result<Value> {
        loop {
            if self.pos >= self.data.len() {
                return Err(format_error(
                    self.path,
                    format!(
                        "{} ends at byte {} without a STOP opcode: the pickle is truncated",
                        self.entry,
                        self.data.len()
                    ),
                ));
            }
            self.op_start = self.pos;
            self.op = self.data[self.pos];
            self.pos += 1;
            self.op_count += 1;
            if self.op == b'.' {
                return self.pop();
            }
            self.step()?;
        }
    }

    /// Runs the opcode in `self.op`.
    fn step(&mut self) -> Result<()> {
        match self.op {
            0x80 => {
                let version = self.read_u8()?;
                if version > 5 {
                    return Err(self.error(format!(
                        "pickle protocol {version} is newer than protocol 5, the newest this \
                         reader knows"
                    )));
                }
            }
            // FRAME only announces the length of the opcodes that follow.
            0x95 => {
                self.read_u64()?;
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                if self.stack.len() > self.floor() {
                    self.pop()?;
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.push(top);
            }
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'J' => {
                let value = i32::from_le_bytes(self.take_array()?);
                self.push(Value::Int(value.into()));
            }
            b'K' => {
                let value = self.read_u8()?;
                self.push(Value::Int(value.into()));
            }
            b'M' => {
                let value = u16::from_le_bytes(self.take_array()?);
                self.push(Value::Int(value.into()));
            }
            0x8a => {
                let len = self.read_u8()?;
                let value = self.read_long(len.into())?;
                self.push(value);
            }
            0x8b => {
                let len = self.read_u32()?;
                let value = self.read_long(len.into())?;
                self.push(value);
            }
            b'G' => {
                self.take(8)?;
                self.push(Value::Float);
            }
            b'X' => {
                let len = self.read_u32()?;
                let value = self.read_str(len.into())?;
                self.push(value);
            }
            0x8c => {
                let len = self.read_u8()?;
                let value = self.read_str(len.into())?;
                self.push(value);
            }
            0x8d => {
                let len = self.read_u64()?;
                let value = self.read_str(len)?;
                self.push(value);
            }
            // Protocol 1 strings; Python 3 decodes them as UTF-8 when
            // `torch.load` reads them.
            b'T' => {
                let len = i32::from_le_bytes(self.take_array()?);
                let len = u64::try_from(len)
                    .map_err(|_| self.error(format!("negative string length {len}")))?;
                let value = self.read_str(len)?;
                self.push(value);
            }
            b'U' => {
                let len = self.read_u8()?;
                let value = self.read_str(len.into())?;
                self.push(value);
            }
            b'B' => {
                let len = self.read_u32()?;
                self.push_bytes(len.into())?;
            }
            b'C' => {
                let len = self.read_u8()?;
                self.push_bytes(len.into())?;
            }
            0x8e | 0x96 => {
                let len = self.read_u64()?;
                self.push_bytes(len)?;
            }
            b')' => {
                let value = self.alloc(Object::Tuple(Vec::new()));
                self.push(value);
            }
            b't' => {
                let items = self.pop_mark()?;
                let value = self.alloc(Object::Tuple(items));
                self.push(value);
            }
            0x85..=0x87 => {
                let count = usize::from(self.op - 0x84);
                let mut items = vec![Value::None; count];
                for slot in items.iter_mut().rev() {
                    *slot = self.pop()?;
                }
                let value = self.alloc(Object::Tuple(items));
                self.push(value);
            }
            b']' => {
                let value = self.alloc(Object::List(Vec::new()));
                self.push(value);
            }
            b'l' => {
                let items = self.pop_mark()?;
                let value = self.alloc(Object::List(items));
                self.push(value);
            }
            b'a' => {
                let item = self.pop()?;
                self.extend_list(vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            b'}' => {
                let value = self.alloc(Object::Dict(Vec::new()));
                self.push(value);
            }
            b'd' => {
                let items = self.pop_mark()?;
                let value = self.alloc(Object::Dict(Vec::new()));
                self.push(value);
                self.set_items(items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.set_items(vec![key, value])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            0x8f => {
                let value = self.alloc(Object::Set(Vec::new()));
                self.push(value);
            }
            0x90 => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                match target {
                    Value::Object(index) => match &mut self.objects[index] {
                        Object::Set(set) => set.extend(items),
                        _ => return Err(self.error("ADDITEMS needs a set below the MARK")),
                    },
                    _ => return Err(self.error("ADDITEMS needs a set below the MARK")),
                }
            }
            0x91 => {
                let items = self.pop_mark()?;
                let value = self.alloc(Object::Set(items));
                self.push(value);
            }
            b'h' => {
                let index = self.read_u8()?;
                self.memo_get(index.into())?;
            }
            b'j' => {
                let index = self.read_u32()?;
                self.memo_get(index)?;
            }
            b'q' => {
                let index = self.read_u8()?;
                self.memo_put(index.into())?;
            }
            b'r' => {
                let index = self.read_u32()?;
                self.memo_put(index)?;
            }
            0x94 => {
                let index =
                    u32::try_from(self.memo.len()).map_err(|_| self.error("the memo is full"))?;
                self.memo_put(index)?;
            }
            b'c' => {
                let module = self.read_line()?;
                let name = self.read_line()?;
                let value = self.global(module, name)?;
                self.push(value);
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(module), Some(name)) = (self.rc_str_of(module), self.rc_str_of(name))
                else {
                    return Err(self.error("STACK_GLOBAL needs two strings on the stack"));
                };
                let value = self.global(&module, &name)?;
                self.push(value);
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let value = self.reduce(callable, args)?;
                self.push(value);
            }
            0x81 => {
                let args = self.pop()?;
                let class = self.pop()?;
                let value = self.new_object(class, args)?;
                self.push(value);
            }
            0x92 => {
                // Keyword arguments are ignored like the positional ones,
                // because only inert records are built this way.
                self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                let value = self.new_object(class, args)?;
                self.push(value);
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.top()?;
                self.build(target, state)?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let value = self.persistent_load(pid)?;
                self.push(value);
            }
            b'i' | b'o' => {
                return Err(self.rejected(
                    "this opcode creates an instance of a class named in the pickle, and this \
                     reader never calls code from the file: it builds only tensors, containers \
                     and module records of torch.nn and dall_e",
                ))
            }
            0x82..=0x84 => {
                return Err(self.rejected(
                    "this opcode loads an object from the copyreg extension registry, which \
                     torch.save never writes",
                ))
            }
            b'P' => {
                return Err(self.rejected(
                    "text persistent ids are not torch.save's format, which uses BINPERSID",
                ))
            }
            b'I' | b'L' | b'F' | b'S' | b'V' | b'g' | b'p' => {
                return Err(self.rejected(
                    "text opcodes of pickle protocol 0 are not supported: torch.save writes \
                     protocol 2 or later",
                ))
            }
            0x97 | 0x98 => {
                return Err(self.rejected(
                    "out-of-band buffers are not supported: torch.save never writes them",
                ))
            }
            op => {
                return Err(self.error(format!("unknown opcode 0x{op:02x}: the pickle is corrupt")))
            }
        }
        Ok(())
    }

    /// Reads a little-endian two's complement integer of `len` bytes (LONG1
    /// and LONG4). Integers beyond 64 bits become opaque values.
    fn read_long(&mut self, len: u64) -> Result<Value> {
        let bytes = self.take(len)?;
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let fill = if negative { 0xff } else { 0 };
        let (low, high) = bytes.split_at(bytes.len().min(8));
        let mut array = [fill; 8];
        array[..low.len()].copy_from_slice(low);
        let value = i64::from_le_bytes(array);
        let fits = high.iter().all(|&b| b == fill) && (value < 0) == negative;
        if fits {
            Ok(Value::Int(value))
        } else {
            Ok(self.alloc(Object::Opaque("integer beyond 64 bits")))
        }
    }

    fn push_bytes(&mut self, len: u64) -> Result<()> {
        self.take(len)?;
        let value = self.alloc(Object::Opaque("bytes"));
        self.push(value);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<()> {
        let value = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.error(format!("memo entry {index} was never stored")))?;
        self.push(value);
        Ok(())
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let value = self.top()?;
        self.memo.insert(index, value);
        Ok(())
    }

    fn extend_list(&mut self, items: Vec<Value>) -> Result<()> {
        let target = self.top()?;
        if let Value::Object(index) = target {
            if let Object::List(list) = &mut self.objects[index] {
                list.extend(items);
                return Ok(());
            }
        }
        Err(self.error(format!(
            "appending to a {}, but only lists can be appended to",
            self.kind_name(target)
        )))
    }

    /// Sets `items` (keys and values, alternating) in the dict on top of the
    /// stack.
    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        if items.len() % 2 != 0 {
            return Err(self.error("a dict needs an even number of keys and values"));
        }
        let target = self.top()?;
        if let Value::Object(index) = target {
            if let Object::Dict(entries) = &mut self.objects[index] {
                entries.extend(items.chunks_exact(2).map(|pair| (pair[0], pair[1])));
                return Ok(());
            }
        }
        Err(self.error(format!(
            "setting an item of a {}, but only dicts can have items set",
            self.kind_name(target)
        )))
    }

    /// Resolves a global to a marker value, or rejects it.
    fn global(&mut self, module: &str, name: &str) -> Result<Value> {
        // Every allowed name is short, and the limit keeps a module class
        // name, which is copied into each module record, small.
        if module.len() + name.len() > MAX_GLOBAL_LEN {
            return Err(self.rejected(format!(
                "rejected a global whose module and name have {} bytes, more than the \
                 {MAX_GLOBAL_LEN} of any global that this reader allows",
                module.len() + name.len()
            )));
        }
        let key = format!("{module}\n{name}");
        if let Some(&value) = self.globals.get(&key) {
            return Ok(value);
        }
        match allowed_global(module, name) {
            Some(global) => {
                let value = self.alloc(Object::Global(global));
                self.globals.insert(key, value);
                Ok(value)
            }
            None => Err(self.rejected(format!(
                "rejected the global {module}.{name}: this reader builds only tensors, \
                 containers and module records of torch.nn and dall_e, and never calls code \
                 from the file. If you trust the file, load it with PyTorch and save its \
                 state_dict() instead"
            ))),
        }
    }

    fn global_of(&self, value: Value) -> Option<Global> {
        match self.object(value) {
            Some(Object::Global(global)) => Some(global.clone()),
            _ => None,
        }
    }

    fn tuple(&self, value: Value, what: &str) -> Result<&[Value]> {
        match self.object(value) {
            Some(Object::Tuple(items)) => Ok(items),
            _ => Err(self.error(format!(
                "{what} must be a tuple, not a {}",
                self.kind_name(value)
            ))),
        }
    }

    /// Copies the items of a tuple of at most `max_len` items. The limit
    /// keeps a pickle from copying one large tuple many times.
    fn small_tuple(&self, value: Value, what: &str, max_len: usize) -> Result<Vec<Value>> {
        let items = self.tuple(value, what)?;
        if items.len() > max_len {
            return Err(self.error(format!(
                "{what} has {} items, more than the {max_len} this reader accepts",
                items.len()
            )));
        }
        Ok(items.to_vec())
    }

    /// Runs REDUCE: calls an allowed constructor on a tuple of arguments.
    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
        let args = self.small_tuple(args, "the arguments of REDUCE", MAX_CALL_ARGS)?;
        let Some(global) = self.global_of(callable) else {
            return Err(self.error(format!(
                "REDUCE calls a {}, but only an allowed global can be called",
                self.kind_name(callable)
            )));
        };
        match global {
            Global::RebuildTensor | Global::RebuildTensorV2 | Global::RebuildTensorV3 => {
                let spec = self.tensor_spec_from(&global, &args)?;
                Ok(self.alloc(Object::Tensor(spec)))
            }
            Global::RebuildParameter => match args.first() {
                Some(&data) if matches!(self.object(data), Some(Object::Tensor(_))) => Ok(data),
                _ => Err(self.error("_rebuild_parameter needs a tensor as its first argument")),
            },
            Global::OrderedDict if args.is_empty() => Ok(self.alloc(Object::Dict(Vec::new()))),
            Global::Set => match args.as_slice() {
                [] => Ok(self.alloc(Object::Set(Vec::new()))),
                [Value::Object(index)] => match &self.objects[*index] {
                    Object::List(_) | Object::Tuple(_) | Object::Set(_) => {
                        Ok(self.alloc(Object::SetOf(*index)))
                    }
                    &Object::SetOf(source) => Ok(self.alloc(Object::SetOf(source))),
                    _ => Err(self.error("set() needs a list, tuple or set")),
                },
                [_] => Err(self.error("set() needs a list, tuple or set")),
                _ => Err(self.error("set() takes at most one argument")),
            },
            Global::Device => Ok(self.alloc(Object::Opaque("torch.device"))),
            // Tuples are immutable, so the size is the tuple itself.
            Global::Size => match args.as_slice() {
                [items] => {
                    self.tuple(*items, "the argument of torch.Size")?;
                    Ok(*items)
                }
                _ => Err(self.error("torch.Size takes one tuple")),
            },
            Global::ModuleClass(class) => Ok(self.alloc(Object::Module { class, state: None })),
            Global::OrderedDict => Err(self
                .error("OrderedDict is called with arguments, but torch.save calls it with none")),
            Global::StorageClass(_) | Global::Dtype(_) => {
                Err(self
                    .error("REDUCE calls a storage class or dtype, which torch.save never does"))
            }
        }
    }

    /// Runs NEWOBJ: creates an instance of a module class, dict or set
    /// without calling its constructor.
    fn new_object(&mut self, class: Value, args: Value) -> Result<Value> {
        self.tuple(args, "the arguments of NEWOBJ")?;
        match self.global_of(class) {
            Some(Global::ModuleClass(class)) => {
                Ok(self.alloc(Object::Module { class, state: None }))
            }
            Some(Global::OrderedDict) => Ok(self.alloc(Object::Dict(Vec::new()))),
            Some(Global::Set) => Ok(self.alloc(Object::Set(Vec::new()))),
            _ => Err(self.error(format!(
                "NEWOBJ creates an instance of a {}, but only module classes, dicts and sets \
                 can be created",
                self.kind_name(class)
            ))),
        }
    }

    /// Runs BUILD: gives a module record its state. The attributes of dicts
    /// and sets (such as the `_metadata` of a state dict) are ignored.
    fn build(&mut self, target: Value, state: Value) -> Result<()> {
        // A state may come as (instance dict, slots dict).
        let state = match self.object(state) {
            Some(Object::Tuple(items)) if items.len() == 2 => items[0],
            _ => state,
        };
        let Value::Object(index) = target else {
            return Err(self.error(format!(
                "BUILD sets the state of a {}, which is not supported",
                self.kind_name(target)
            )));
        };
        match &mut self.objects[index] {
            Object::Module { state: slot, .. } => {
                *slot = Some(state);
                Ok(())
            }
            Object::Dict(_) | Object::Set(_) | Object::SetOf(_) => Ok(()),
            other => {
                let kind = other.kind_name();
                Err(self.error(format!(
                    "BUILD sets the state of a {kind}, which is not supported"
                )))
            }
        }
    }

    /// Runs BINPERSID: turns a persistent id into a storage reference.
    fn persistent_load(&mut self, pid: Value) -> Result<Value> {
        let fields = self.small_tuple(pid, "a persistent id", 5)?;
        let [tag, class, key, _location, numel] = fields.as_slice() else {
            return Err(self.error(format!(
                "a persistent id has {} fields, expected 5: (\"storage\", storage class, key, \
                 location, size)",
                fields.len()
            )));
        };
        if self.str_of(*tag) != Some("storage") {
            return Err(self.error("a persistent id does not start with \"storage\""));
        }
        let Some(Global::StorageClass(kind)) = self.global_of(*class) else {
            return Err(self.error(format!(
                "the second field of a persistent id is a {}, expected a storage class",
                self.kind_name(*class)
            )));
        };
        let key = self
            .rc_str_of(*key)
            .ok_or_else(|| self.error("the storage key of a persistent id is not a string"))?;
        let numel = match *numel {
            Value::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
        .ok_or_else(|| self.error("the size of a storage must be a non-negative integer"))?;
        let element = kind.map_or(1, |kind| kind.elt_size_in_bytes() as u64);
        let byte_len = numel.checked_mul(element).ok_or_else(|| {
            self.error(format!(
                "the storage {key} of {numel} elements is too large"
            ))
        })?;
        Ok(self.alloc(Object::Storage(Rc::new(Storage {
            key,
            kind,
            byte_len,
        }))))
    }

    /// Converts a tuple of at most [`MAX_DIMS`] non-negative integers, once
    /// per tuple object.
    fn dims(&mut self, value: Value, what: &str) -> Result<Rc<[u64]>> {
        if let Value::Object(index) = value {
            if let Some(dims) = self.dims_by_tuple.get(&index) {
                return Ok(dims.clone());
            }
        }
        let items = self.small_tuple(value, what, MAX_DIMS)?;
        let dims: Rc<[u64]> = items
            .iter()
            .map(|item| match *item {
                Value::Int(n) => u64::try_from(n).ok(),
                _ => None,
            })
            .collect::<Option<Rc<[u64]>>>()
            .ok_or_else(|| self.error(format!("{what} must contain non-negative integers")))?;
        if let Value::Object(index) = value {
            self.dims_by_tuple.insert(index, dims.clone());
        }
        Ok(dims)
    }

    /// Checks the arguments of a `_rebuild_tensor*` call and returns the
    /// tensor it describes.
    fn tensor_spec_from(&mut self, global: &Global, args: &[Value]) -> Result<TensorSpec> {
        let expected = match global {
            Global::RebuildTensor => 4..=4,
            Global::RebuildTensorV2 => 6..=7,
            _ => 7..=8,
        };
        if !expected.contains(&args.len()) {
            return Err(self.error(format!(
                "a tensor is rebuilt from {} arguments, expected {} to {}",
                args.len(),
                expected.start(),
                expected.end()
            )));
        }

        let storage = match self.object(args[0]) {
            Some(Object::Storage(storage)) => storage.clone(),
            _ => {
                return Err(self.error(format!(
                    "the first argument of a tensor is a {}, not a storage",
                    self.kind_name(args[0])
                )))
            }
        };
        let kind = match global {
            Global::RebuildTensorV3 => match self.global_of(args[6]) {
                Some(Global::Dtype(kind)) => kind,
                _ => return Err(self.error("the dtype of a tensor is not a known torch dtype")),
            },
            _ => storage.kind.ok_or_else(|| {
                self.error("an untyped storage is used without a dtype (_rebuild_tensor_v3)")
            })?,
        };

        let offset = match args[1] {
            Value::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
        .ok_or_else(|| self.error("the storage offset must be a non-negative integer"))?;
        let size = self.dims(args[2], "the size of a tensor")?;
        let stride = self.dims(args[3], "the stride of a tensor")?;
        if size.len() != stride.len() {
            return Err(self.error(format!(
                "a tensor has {} sizes but {} strides",
                size.len(),
                stride.len()
            )));
        }
        let element = kind.elt_size_in_bytes() as u64;
        if storage.byte_len % element != 0 {
            return Err(self.error(format!(
                "the storage {} of {} bytes does not contain whole elements of {kind:?}",
                storage.key, storage.byte_len
            )));
        }
        let capacity = storage.byte_len / element;

        let too_large = || self.error(format!("a tensor of size {size:?} is too large"));
        let numel = size
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(too_large)?;
        if size.iter().any(|&d| i64::try_from(d).is_err()) {
            return Err(too_large());
        }
        if numel == 0 && offset > capacity {
            return Err(self.error(format!(
                "an empty tensor has the storage offset {offset}, past the end of the storage \
                 {} of {capacity} elements",
                storage.key
            )));
        }
        if numel > 0 {
            // The element with the largest offset.
            let last = size
                .iter()
                .zip(stride.iter())
                .try_fold(offset, |last, (&d, &s)| {
                    last.checked_add((d - 1).checked_mul(s)?)
                })
                .ok_or_else(too_large)?;
            if last >= capacity {
                return Err(self.error(format!(
                    "a tensor with storage offset {offset}, size {size:?} and stride \
                     {stride:?} reaches element {last}, past the end of the storage {} of \
                     {capacity} elements",
                    storage.key
                )));
            }
        }

        Ok(TensorSpec {
            storage,
            kind,
            offset,
            size,
            stride,
            numel,
        })
    }

    fn dict(&self, value: Value) -> Option<&[(Value, Value)]> {
        match self.object(value) {
            Some(Object::Dict(entries)) => Some(entries),
            _ => None,
        }
    }

    /// Returns the value of the last entry of `entries` whose key is the
    /// string `key`, as Python keeps the last value of a repeated key.
    fn get_str(&self, entries: &[(Value, Value)], key: &str) -> Option<Value> {
        entries
            .iter()
            .rev()
            .find(|&&(k, _)| self.str_of(k) == Some(key))
            .map(|&(_, value)| value)
    }

    /// Returns the strings of a set, list or tuple.
    fn string_set(&self, value: Option<Value>) -> HashSet<&str> {
        let items = match value.and_then(|v| self.object(v)) {
            Some(&Object::SetOf(source)) => match &self.objects[source] {
                Object::Set(items) | Object::List(items) | Object::Tuple(items) => items,
                _ => return HashSet::new(),
            },
            Some(Object::Set(items) | Object::List(items) | Object::Tuple(items)) => items,
            _ => return HashSet::new(),
        };
        items.iter().filter_map(|&item| self.str_of(item)).collect()
    }
}

// Naming the tensors.

/// The nesting of dicts and modules beyond which naming stops with an
/// error; real state dicts nest a few dozen levels at most.
const MAX_DEPTH: usize = 256;

/// How many entries naming may visit per opcode of the pickle. A tree of
/// dicts and modules visits each entry once, and a module shared between
/// parents is visited once per parent. This factor allows for such sharing
/// but stops a pickle whose sharing would make naming take exponential time.
const VISITS_PER_OPCODE: u64 = 4;

/// How many bytes of tensor names naming may build per byte of the pickle.
/// A state dict stores each name whole, and a module stores each part of a
/// name once, next to a few hundred bytes of attributes per module.
// NOTE: an estimate. With PyTorch 2.13, a chain of 250 nested modules with
// 22-character names and one parameter each needs 10 bytes of names per
// byte of pickle. Common models need less than 1.
const NAME_BYTES_PER_PICKLE_BYTE: u64 = 64;

/// The length beyond which error messages shorten a name.
const MESSAGE_NAME_LEN: usize = 200;

struct Named<'m> {
    tensors: Vec<(String, &'m TensorSpec)>,
    root_class: Option<String>,
    root_ints: BTreeMap<String, i64>,
}

/// The entries of one dict or module that remain to be visited.
struct Frame {
    /// The index of the dict or module in [`Machine::objects`].
    container: usize,
    /// The key of the container in its parent, None for the root.
    key: Option<Value>,
    entries: Rc<[(Value, Value)]>,
    next: usize,
}

/// Walks the root object and names its tensors, without recursion.
fn collect_names<'m>(path: &Path, machine: &'m Machine, root: Value) -> Result<Named<'m>> {
    let (root_class, root_ints, root_index) = match (root, machine.object(root)) {
        (Value::Object(index), Some(Object::Module { class, state })) => {
            let ints = state
                .and_then(|state| machine.dict(state))
                .map(|entries| module_ints(machine, entries))
                .unwrap_or_default();
            (Some(class.to_string()), ints, index)
        }
        (Value::Object(index), Some(Object::Dict(_))) => (None, BTreeMap::new(), index),
        _ => {
            return Err(unsupported(
                path,
                format!(
                    "the saved object is a {}, but this reader reads a dict of tensors or a \
                     torch.nn module: save a dict such as {{\"name\": tensor}} instead",
                    machine.kind_name(root)
                ),
            ))
        }
    };

    let mut walker = Walker {
        machine,
        path,
        visits_left: machine.op_count.saturating_mul(VISITS_PER_OPCODE),
        name_bytes_left: (machine.data.len() as u64).saturating_mul(NAME_BYTES_PER_PICKLE_BYTE),
        entries_by_container: HashMap::new(),
    };
    let mut tensors = Vec::new();
    let mut frames = vec![Frame {
        container: root_index,
        key: None,
        entries: walker.entries(root_index),
        next: 0,
    }];
    while let Some(frame) = frames.last_mut() {
        let Some(&(key, value)) = frame.entries.get(frame.next) else {
            frames.pop();
            continue;
        };
        frame.next += 1;
        walker.count_visit()?;
        let Value::Object(index) = value else {
            continue;
        };
        match &machine.objects[index] {
            Object::Tensor(spec) => {
                let name = walker.name(&frames, key)?;
                tensors.push((name, spec));
            }
            Object::Dict(_) | Object::Module { .. } => {
                if frames.iter().any(|frame| frame.container == index) {
                    return Err(format_error(
                        path,
                        format!(
                            "the dict or module at {} contains itself",
                            walker.short_name(&frames, key)
                        ),
                    ));
                }
                if frames.len() >= MAX_DEPTH {
                    return Err(format_error(
                        path,
                        format!(
                            "dicts or modules nest more than {MAX_DEPTH} levels deep at {}",
                            walker.short_name(&frames, key)
                        ),
                    ));
                }
                frames.push(Frame {
                    container: index,
                    key: Some(key),
                    entries: walker.entries(index),
                    next: 0,
                });
            }
            _ => {}
        }
    }
    check_unique(path, &tensors)?;
    Ok(Named {
        tensors,
        root_class,
        root_ints,
    })
}

/// Rejects two tensors with one name, which a crafted pickle can give with a
/// repeated dict key or with keys that contain ".".
fn check_unique(path: &Path, tensors: &[(String, &TensorSpec)]) -> Result<()> {
    let mut names: Vec<&str> = tensors.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    match names.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(format_error(
            path,
            format!("two tensors have the name {}", pair[0]),
        )),
        None => Ok(()),
    }
}

/// The state of the walk that names tensors, with its limits.
struct Walker<'m> {
    machine: &'m Machine<'m>,
    path: &'m Path,
    visits_left: u64,
    name_bytes_left: u64,
    /// The entries of each dict or module visited so far, computed once so
    /// that a container shared between parents costs its size only once.
    entries_by_container: HashMap<usize, Rc<[(Value, Value)]>>,
}

impl<'m> Walker<'m> {
    fn count_visit(&mut self) -> Result<()> {
        self.visits_left = self.visits_left.checked_sub(1).ok_or_else(|| {
            format_error(
                self.path,
                "the pickle shares dicts or modules between so many parents that naming its \
                 tensors would not end",
            )
        })?;
        Ok(())
    }

    /// Returns the text of a key: a string, or an integer in decimal.
    fn key_text(&self, key: Value) -> Option<Cow<'m, str>> {
        match key {
            Value::Int(i) => Some(Cow::Owned(i.to_string())),
            key => self.machine.str_of(key).map(Cow::Borrowed),
        }
    }

    /// Returns the keys from the root to `key`, the key of an entry of the
    /// last frame.
    fn key_path(&self, frames: &[Frame], key: Value) -> Vec<Value> {
        frames
            .iter()
            .filter_map(|frame| frame.key)
            .chain(std::iter::once(key))
            .collect()
    }

    /// Returns the name of the entry `key` of the last frame: the keys from
    /// the root joined with ".".
    fn name(&mut self, frames: &[Frame], key: Value) -> Result<String> {
        let mut parts = Vec::new();
        for key in self.key_path(frames, key) {
            let Some(part) = self.key_text(key) else {
                return Err(format_error(
                    self.path,
                    format!(
                        "a tensor under {} has a {} as a key, but names need string or \
                         integer keys",
                        self.short_name(frames, key),
                        self.machine.kind_name(key)
                    ),
                ));
            };
            parts.push(part);
        }
        let len = parts.iter().map(|part| part.len() as u64 + 1).sum::<u64>() - 1;
        self.name_bytes_left = self.name_bytes_left.checked_sub(len).ok_or_else(|| {
            format_error(
                self.path,
                format!(
                    "the names of the tensors add up to more than {NAME_BYTES_PER_PICKLE_BYTE} \
                     bytes per byte of the pickle"
                ),
            )
        })?;
        Ok(parts.join("."))
    }

    /// Returns the name of the entry `key` of the last frame for a message,
    /// shortened to about [`MESSAGE_NAME_LEN`] bytes.
    fn short_name(&self, frames: &[Frame], key: Value) -> String {
        let mut name = String::new();
        for key in self.key_path(frames, key) {
            let part = self.key_text(key).unwrap_or(Cow::Borrowed("?"));
            if name.len() + part.len() + 1 > MESSAGE_NAME_LEN {
                name.push_str("...");
                break;
            }
            if !name.is_empty() {
                name.push('.');
            }
            name.push_str(&part);
        }
        name
    }

    /// Returns the entries of a dict, or the parameters, persistent buffers
    /// and submodules of a module, in state-dict order.
    fn entries(&mut self, container: usize) -> Rc<[(Value, Value)]> {
        if let Some(entries) = self.entries_by_container.get(&container) {
            return entries.clone();
        }
        let machine = self.machine;
        let entries: Rc<[(Value, Value)]> = match &machine.objects[container] {
            Object::Dict(entries) => entries.as_slice().into(),
            Object::Module {
                state: Some(state), ..
            } => module_entries(machine, *state).into(),
            _ => Rc::new([]),
        };
        self.entries_by_container.insert(container, entries.clone());
        entries
    }
}

/// Returns the parameters, persistent buffers and submodules of a module
/// whose state is `state`, skipping those that are None.
fn module_entries(machine: &Machine, state: Value) -> Vec<(Value, Value)> {
    let Some(state) = machine.dict(state) else {
        return Vec::new();
    };
    let non_persistent = machine.string_set(machine.get_str(state, "_non_persistent_buffers_set"));
    let mut entries = Vec::new();
    for field in ["_parameters", "_buffers", "_modules"] {
        let Some(dict) = machine
            .get_str(state, field)
            .and_then(|value| machine.dict(value))
        else {
            continue;
        };
        for &(key, value) in dict {
            let Some(name) = machine.str_of(key) else {
                continue;
            };
            if value == Value::None {
                continue;
            }
            if field == "_buffers" && non_persistent.contains(name) {
                continue;
            }
            entries.push((key, value));
        }
    }
    entries
}

fn module_ints(machine: &Machine, state: &[(Value, Value)]) -> BTreeMap<String, i64> {
    state
        .iter()
        .filter_map(|&(key, value)| {
            let value = match value {
                Value::Int(i) => i,
                Value::Bool(b) => b.into(),
                _ => return None,
            };
            Some((machine.str_of(key)?.to_string(), value))
        })
        .collect()
}

// Building the tensors.

/// How many times the size of the file the tensors may take in memory.
/// Tensors that view one storage are copied apart, so a small file could
/// otherwise describe any amount of memory.
// NOTE: a guessed bound. Real files stay below 2: a flat parameter saved
// next to views of it is the largest case known.
const OUTPUT_BYTES_PER_FILE_BYTE: u64 = 4;

fn check_output_size(path: &Path, file_len: u64, specs: &[(String, &TensorSpec)]) -> Result<()> {
    let limit = file_len.saturating_mul(OUTPUT_BYTES_PER_FILE_BYTE);
    let mut total = 0u64;
    for (name, spec) in specs {
        total = spec
            .byte_len()
            .and_then(|bytes| total.checked_add(bytes))
            .filter(|&total| total <= limit)
            .ok_or_else(|| {
                format_error(
                    path,
                    format!(
                        "the tensors up to {name} take more than {limit} bytes, \
                         {OUTPUT_BYTES_PER_FILE_BYTE} times the size of the file: the file \
                         repeats or expands views of its storages. Save contiguous copies \
                         (tensor.clone()) instead"
                    ),
                )
            })?;
    }
    Ok(())
}

/// Copies each tensor out of its storage. Each storage is read once and
/// dropped after the last tensor that uses it.
fn build_tensors(
    archive: &mut Archive,
    specs: &[(String, &TensorSpec)],
) -> Result<Vec<(String, Tensor)>> {
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for (_, spec) in specs {
        *uses.entry(&*spec.storage.key).or_default() += 1;
    }
    let mut cache: HashMap<&str, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::with_capacity(specs.len());
    for (name, spec) in specs {
        let key = &*spec.storage.key;
        let storage_len = spec.storage.byte_len;
        if !cache.contains_key(key) {
            let bytes = archive.read_storage(key, storage_len)?;
            cache.insert(key, bytes);
        }
        let bytes = &cache[key];
        if bytes.len() as u64 != storage_len {
            return Err(format_error(
                archive.path,
                format!(
                    "the storage {key} has {} bytes, but the tensor {name} declares {}",
                    bytes.len(),
                    storage_len
                ),
            ));
        }
        let data = gather(spec, bytes).ok_or_else(|| {
            format_error(
                archive.path,
                format!("the tensor {name} lies outside its storage {key}"),
            )
        })?;
        if spec.kind == Kind::Bool {
            if let Some(byte) = data.iter().find(|&&b| b > 1) {
                return Err(format_error(
                    archive.path,
                    format!("the bool tensor {name} contains the byte {byte}, not 0 or 1"),
                ));
            }
        }
        let size = spec
            .size
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<std::result::Result<Vec<i64>, _>>()
            .map_err(|_| format_error(archive.path, format!("the tensor {name} is too large")))?;
        // `f_from_data_size` copies numel * element size bytes from `data`
        // without checking its length.
        if spec.byte_len() != Some(data.len() as u64) {
            return Err(format_error(
                archive.path,
                format!("the data of the tensor {name} has the wrong length"),
            ));
        }
        let tensor = Tensor::f_from_data_size(&data, &size, spec.kind)?;
        tensors.push((name.clone(), tensor));

        let left = uses.get_mut(key).map(|n| {
            *n -= 1;
            *n
        });
        if left == Some(0) {
            cache.remove(key);
        }
    }
    Ok(tensors)
}

/// Copies the elements of a strided view out of `storage` in row-major
/// order. Returns None if an element lies outside `storage`, which the
/// checks of [`Machine::tensor_spec_from`] already exclude.
fn gather(spec: &TensorSpec, storage: &[u8]) -> Option<Vec<u8>> {
    let element = spec.kind.elt_size_in_bytes();
    let numel = usize::try_from(spec.numel).ok()?;
    let mut out = Vec::with_capacity(numel.checked_mul(element)?);
    if numel == 0 {
        return Some(out);
    }
    let offset = usize::try_from(spec.offset).ok()?;
    let size: Vec<usize> = spec
        .size
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()?;
    let stride: Vec<usize> = spec
        .stride
        .iter()
        .map(|&s| usize::try_from(s).ok())
        .collect::<Option<_>>()?;

    // Row-major strides (ignoring dimensions of size 1) make one slice.
    let mut expected = 1usize;
    let mut contiguous = true;
    for (&d, &s) in size.iter().zip(&stride).rev() {
        if d != 1 && s != expected {
            contiguous = false;
            break;
        }
        expected = expected.checked_mul(d)?;
    }
    if contiguous {
        let start = offset.checked_mul(element)?;
        let end = start.checked_add(numel.checked_mul(element)?)?;
        out.extend_from_slice(storage.get(start..end)?);
        return Some(out);
    }

    // Walk the index like an odometer, keeping the element offset of the
    // current index in `position`.
    let mut index = vec![0usize; size.len()];
    let mut position = offset;
    for _ in 0..numel {
        let start = position.checked_mul(element)?;
        out.extend_from_slice(storage.get(start..start.checked_add(element)?)?);
        for dim in (0..size.len()).rev() {
            index[dim] += 1;
            if index[dim] < size[dim] {
                position = position.checked_add(stride[dim])?;
                break;
            }
            position = position.checked_sub((size[dim] - 1).checked_mul(stride[dim])?)?;
            index[dim] = 0;
        }
    }
    Some(out)
}
