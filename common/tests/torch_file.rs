//! Tests of the `torch.save` reader against fixtures written by PyTorch
//! (`reference/torch_files.py`), and of its rejection of hostile, broken
//! and crafted files.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use common::torch_file::{self, TorchFile};
use common::Error;
use tch::{Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch")
        .join(name)
}

/// What a fixture must load as, from its `.safetensors` file.
struct Expected {
    tensors: BTreeMap<String, Tensor>,
    order: Vec<String>,
    root_class: Option<String>,
    root_ints: BTreeMap<String, i64>,
}

fn expected(stem: &str) -> Expected {
    let path = fixture(&format!("{stem}.safetensors"));
    let tensors = common::checkpoint::read(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let text = &metadata.metadata().as_ref().unwrap()["expected"];
    let json: serde_json::Value = serde_json::from_str(text).unwrap();
    let order = json["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap().to_string())
        .collect();
    let root_class = json["root_class"].as_str().map(str::to_string);
    let root_ints = json["root_ints"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| (name.clone(), value.as_i64().unwrap()))
        .collect();
    Expected {
        tensors,
        order,
        root_class,
        root_ints,
    }
}

fn bytes_of(tensor: &Tensor) -> Vec<u8> {
    let tensor = tensor.contiguous();
    let numel = tensor.numel();
    let mut bytes = vec![0u8; numel * tensor.kind().elt_size_in_bytes()];
    tensor.copy_data_u8(&mut bytes, numel);
    bytes
}

/// Asserts that `file` has exactly the expected names, in order, with the
/// same dtypes, shapes and bytes.
fn assert_matches(file: &TorchFile, expected: &Expected) {
    let names: Vec<&str> = file.tensors.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, expected.order);
    for (name, tensor) in &file.tensors {
        let want = &expected.tensors[name];
        assert_eq!(tensor.kind(), want.kind(), "dtype of {name}");
        assert_eq!(tensor.size(), want.size(), "shape of {name}");
        assert_eq!(bytes_of(tensor), bytes_of(want), "values of {name}");
    }
    assert_eq!(file.root_class, expected.root_class);
    assert_eq!(file.root_ints, expected.root_ints);
}

fn read_fixture(name: &str) -> TorchFile {
    torch_file::read(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Reads `path`, which must fail, and returns the message.
fn read_error(path: &Path) -> String {
    match torch_file::read(path) {
        Ok(file) => panic!(
            "{} was read, with {} tensors",
            path.display(),
            file.tensors.len()
        ),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(message: &str, fact: &str) {
    assert!(
        message.contains(fact),
        "the message lacks {fact:?}: {message}"
    );
}

// Files written by PyTorch.

#[test]
fn state_dict_every_dtype() {
    let file = read_fixture("state_dict.pt");
    assert_matches(&file, &expected("state_dict"));
    let kinds: Vec<Kind> = file.tensors.iter().map(|(_, t)| t.kind()).collect();
    for kind in [
        Kind::Float,
        Kind::Double,
        Kind::Half,
        Kind::BFloat16,
        Kind::Int64,
        Kind::Int,
        Kind::Int16,
        Kind::Int8,
        Kind::Uint8,
        Kind::Bool,
    ] {
        assert!(kinds.contains(&kind), "no tensor of {kind:?}");
    }
}

#[test]
fn state_dict_views_and_scalars() {
    let file = read_fixture("state_dict.pt");
    let get = |name: &str| {
        &file
            .tensors
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .1
    };
    assert_eq!(get("transposed").size(), [4, 3]);
    assert!(get("transposed").is_contiguous());
    assert_eq!(get("offset_view").size(), [3]);
    assert_eq!(get("scalar").size(), Vec::<i64>::new());
    assert_eq!(get("scalar").double_value(&[]), 2.5);
    assert_eq!(get("empty").size(), [0, 3]);
}

#[test]
fn shared_storage_gives_own_copies() {
    let file = read_fixture("state_dict.pt");
    let pointers: Vec<usize> = file
        .tensors
        .iter()
        .filter(|(_, t)| t.numel() > 0)
        .map(|(_, t)| t.data_ptr() as usize)
        .collect();
    let mut distinct = pointers.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), pointers.len(), "two tensors share memory");
}

#[test]
fn state_dict_protocol_5() {
    let file = read_fixture("state_dict_protocol5.pt");
    assert_matches(&file, &expected("state_dict"));
}

#[test]
fn module_gives_state_dict_names() {
    let file = read_fixture("module.pt");
    assert_matches(&file, &expected("module"));
    let names: Vec<&str> = file.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"running"), "persistent buffer missing");
    assert!(!names.contains(&"scratch"), "non-persistent buffer present");
    assert!(!names.contains(&"2.bias"), "a None parameter is present");
    assert_eq!(
        file.root_class.as_deref(),
        Some("torch.nn.modules.container.Sequential")
    );
    assert_eq!(file.root_ints.get("n_hid"), Some(&7));
    assert_eq!(file.root_ints.get("training"), Some(&1));
}

#[test]
fn module_protocol_4() {
    let file = read_fixture("module_protocol4.pt");
    assert_matches(&file, &expected("module"));
}

#[test]
fn dall_e_block_module() {
    let file = read_fixture("dall_e_block.pt");
    assert_matches(&file, &expected("dall_e_block"));
    assert_eq!(
        file.root_class.as_deref(),
        Some("dall_e.encoder.EncoderBlock")
    );
    assert_eq!(file.root_ints.get("n_out"), Some(&4));
    assert_eq!(file.root_ints.get("requires_grad"), Some(&0));
}

#[test]
fn nested_dict_joins_keys() {
    let file = read_fixture("nested.pt");
    assert_matches(&file, &expected("nested"));
    assert_eq!(file.root_class, None);
    assert!(file.root_ints.is_empty());
}

// Hostile pickles written by the fixture script.

fn assert_rejected(name: &str, facts: &[&str]) {
    let path = fixture(name);
    let error = torch_file::read(&path).unwrap_err();
    assert!(
        matches!(error, Error::Unsupported(_)),
        "{name}: expected an unsupported-file error, got {error:?}"
    );
    let message = error.to_string();
    assert_contains(&message, &path.display().to_string());
    for fact in facts {
        assert_contains(&message, fact);
    }
}

#[test]
fn reduce_os_system_rejected() {
    assert_rejected(
        "reduce_os_system.pt",
        &["rejected the global os.system", "GLOBAL", "byte 2"],
    );
}

#[test]
fn reduce_builtins_eval_rejected() {
    assert_rejected(
        "reduce_builtins_eval.pt",
        &["rejected the global builtins.eval"],
    );
}

#[test]
fn newobj_subprocess_popen_rejected() {
    assert_rejected(
        "newobj_subprocess_popen.pt",
        &["rejected the global subprocess.Popen"],
    );
}

#[test]
fn stack_global_os_system_rejected() {
    assert_rejected(
        "stack_global_os_system.pt",
        &["rejected the global os.system", "STACK_GLOBAL"],
    );
}

#[test]
fn global_after_tensor_rejected() {
    assert_rejected(
        "reduce_after_tensor.pt",
        &["rejected the global posix.system"],
    );
}

#[test]
fn inst_opcode_rejected() {
    assert_rejected("inst_os_system.pt", &["(INST)", "byte 36"]);
}

// Broken files written by the fixture script.

fn assert_invalid(name: &str, facts: &[&str]) {
    let path = fixture(name);
    let message = read_error(&path);
    assert_contains(&message, &path.display().to_string());
    for fact in facts {
        assert_contains(&message, fact);
    }
}

#[test]
fn storage_offset_past_end() {
    assert_invalid(
        "storage_offset_out_of_range.pt",
        &[
            "storage offset 3",
            "past the end of the storage 0 of 4 elements",
        ],
    );
}

#[test]
fn storage_shorter_than_declared() {
    assert_invalid(
        "storage_too_short.pt",
        &["storage_too_short/data/0 has 16 bytes", "declares 32"],
    );
}

#[test]
fn big_endian_rejected() {
    assert_invalid("big_endian.pt", &["big-endian"]);
}

#[test]
fn compressed_entry_rejected() {
    assert_rejected(
        "compressed.pt",
        &["the entry compressed/byteorder is compressed"],
    );
}

#[test]
fn truncated_archive() {
    assert_invalid("truncated.pt", &["not a readable zip archive", "truncated"]);
}

#[test]
fn archive_without_pickle() {
    assert_invalid("no_data_pkl.pt", &["no <name>/data.pkl entry"]);
}

#[test]
fn legacy_format_rejected() {
    assert_invalid(
        "legacy.pt",
        &["legacy torch.save format", "PyTorch 1.6 or later"],
    );
}

#[test]
fn random_bytes_rejected() {
    assert_invalid("random.bin", &["not a zip archive"]);
}

#[test]
fn missing_file() {
    let path = fixture("absent.pt");
    let error = torch_file::read(&path).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "got {error:?}");
    assert_contains(&error.to_string(), "absent.pt");
}

// Pickles crafted here, inside archives laid out as torch.save lays them
// out.

/// Writes an archive with `data.pkl` and storages into a temporary
/// directory and returns the directory (to keep it alive) and the path.
fn torch_zip(pickle: &[u8], storages: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let mut entries: Vec<(String, &[u8])> = vec![
        ("crafted/data.pkl".into(), pickle),
        ("crafted/byteorder".into(), b"little"),
    ];
    for (key, bytes) in storages {
        entries.push((format!("crafted/data/{key}"), bytes));
    }
    for (name, bytes) in entries {
        writer.start_file(name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    let archive = writer.finish().unwrap().into_inner();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crafted.pt");
    std::fs::write(&path, archive).unwrap();
    (dir, path)
}

fn crafted_error(pickle: &[u8], storages: &[(&str, &[u8])]) -> String {
    let (_dir, path) = torch_zip(pickle, storages);
    read_error(&path)
}

fn unicode(text: &str) -> Vec<u8> {
    let mut op = vec![b'X'];
    op.extend_from_slice(&(text.len() as u32).to_le_bytes());
    op.extend_from_slice(text.as_bytes());
    op
}

fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

/// Returns the opcodes of a float32 tensor over storage "0" of `numel`
/// elements.
fn tensor_ops(numel: u32, offset: u32, size: &[u32], stride: &[u32]) -> Vec<u8> {
    let int = |n: u32| {
        let mut op = vec![b'J'];
        op.extend_from_slice(&n.to_le_bytes());
        op
    };
    let mut ops = global("torch._utils", "_rebuild_tensor_v2");
    ops.push(b'(');
    ops.push(b'(');
    ops.extend(unicode("storage"));
    ops.extend(global("torch", "FloatStorage"));
    ops.extend(unicode("0"));
    ops.extend(unicode("cpu"));
    ops.extend(int(numel));
    ops.extend(b"tQ");
    ops.extend(int(offset));
    ops.push(b'(');
    size.iter().for_each(|&n| ops.extend(int(n)));
    ops.push(b't');
    ops.push(b'(');
    stride.iter().for_each(|&n| ops.extend(int(n)));
    ops.push(b't');
    ops.push(0x89);
    ops.extend(global("collections", "OrderedDict"));
    ops.extend(b")R");
    ops.extend(b"tR");
    ops
}

/// Returns a protocol 2 pickle of `{"w": <tensor>}`.
fn dict_of_tensor(tensor: &[u8]) -> Vec<u8> {
    let mut pickle = vec![0x80, 2, b'}'];
    pickle.extend(unicode("w"));
    pickle.extend_from_slice(tensor);
    pickle.extend(b"s.");
    pickle
}

fn floats(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn crafted_strided_view_is_gathered() {
    // A 2x2 view with strides (1, 2) from offset 1: [[1, 3], [2, 4]].
    let storage = floats(&[0.0, 1.0, 2.0, 3.0, 4.0]);
    let pickle = dict_of_tensor(&tensor_ops(5, 1, &[2, 2], &[1, 2]));
    let (_dir, path) = torch_zip(&pickle, &[("0", &storage)]);
    let file = torch_file::read(&path).unwrap();
    let (name, tensor) = &file.tensors[0];
    assert_eq!(name, "w");
    assert_eq!(bytes_of(tensor), floats(&[1.0, 3.0, 2.0, 4.0]));
}

#[test]
fn expanded_view_within_limit() {
    // Stride 0 repeats the one element of the storage.
    let storage = floats(&[7.0]);
    let pickle = dict_of_tensor(&tensor_ops(1, 0, &[3], &[0]));
    let (_dir, path) = torch_zip(&pickle, &[("0", &storage)]);
    let file = torch_file::read(&path).unwrap();
    assert_eq!(bytes_of(&file.tensors[0].1), floats(&[7.0, 7.0, 7.0]));
}

#[test]
fn expanded_view_past_limit() {
    let storage = floats(&[7.0]);
    let size = [1 << 30, 1 << 30];
    let message = crafted_error(
        &dict_of_tensor(&tensor_ops(1, 0, &size, &[0, 0])),
        &[("0", &storage)],
    );
    assert_contains(&message, "times the size of the file");
}

#[test]
fn element_count_overflow() {
    let size = [1 << 30, 1 << 30, 1 << 30];
    let message = crafted_error(
        &dict_of_tensor(&tensor_ops(4, 0, &size, &[1, 1, 1])),
        &[("0", &floats(&[1.0; 4]))],
    );
    assert_contains(&message, "too large");
}

#[test]
fn stride_past_storage_end() {
    let message = crafted_error(
        &dict_of_tensor(&tensor_ops(4, 0, &[2], &[4])),
        &[("0", &floats(&[1.0; 4]))],
    );
    assert_contains(&message, "reaches element 4");
}

#[test]
fn missing_storage_entry() {
    let message = crafted_error(&dict_of_tensor(&tensor_ops(4, 0, &[4], &[1])), &[]);
    assert_contains(&message, "the storage 0 is missing");
}

#[test]
fn bool_storage_with_invalid_byte() {
    let mut tensor = tensor_ops(2, 0, &[2], &[1]);
    let float_storage = global("torch", "FloatStorage");
    let at = tensor
        .windows(float_storage.len())
        .position(|w| w == float_storage.as_slice())
        .unwrap();
    tensor.splice(at..at + float_storage.len(), global("torch", "BoolStorage"));
    let message = crafted_error(&dict_of_tensor(&tensor), &[("0", &[1, 5])]);
    assert_contains(&message, "contains the byte 5");
}

#[test]
fn deep_tuple_nesting_no_overflow() {
    let mut pickle = vec![0x80, 2, b'N'];
    pickle.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    pickle.push(b'.');
    let message = crafted_error(&pickle, &[]);
    assert_contains(&message, "the saved object is a tuple");
}

#[test]
fn deep_dict_nesting_limited() {
    let depth = 10_000;
    let mut pickle = vec![0x80, 2];
    for _ in 0..depth {
        pickle.push(b'}');
        pickle.extend(unicode("a"));
    }
    pickle.push(b'}');
    pickle.extend(std::iter::repeat_n(b's', depth));
    pickle.push(b'.');
    let message = crafted_error(&pickle, &[]);
    assert_contains(&message, "nest more than");
}

#[test]
fn dict_containing_itself() {
    // d = {}; d["a"] = d
    let mut pickle = vec![0x80, 2, b'}', b'q', 0];
    pickle.extend(unicode("a"));
    pickle.extend(b"h\x00s.");
    let message = crafted_error(&pickle, &[]);
    assert_contains(&message, "the dict or module at a contains itself");
}

#[test]
fn shared_dicts_exponential_walk() {
    // d0 = {"w": tensor}; d(i+1) = {"a": d(i), "b": d(i)}: 2^60 paths.
    let mut pickle = vec![0x80, 2, b'}'];
    pickle.extend(unicode("w"));
    pickle.extend(tensor_ops(1, 0, &[1], &[1]));
    pickle.extend(b"sq\x00");
    for _ in 0..60 {
        pickle.push(b'}');
        pickle.extend(unicode("a"));
        pickle.extend(b"h\x00s");
        pickle.extend(unicode("b"));
        pickle.extend(b"h\x00sq\x00");
    }
    pickle.push(b'.');
    let message = crafted_error(&pickle, &[("0", &floats(&[1.0]))]);
    assert_contains(&message, "would not end");
}

#[test]
fn duplicate_names_rejected() {
    // {"a.b": t, "a": {"b": t}}
    let tensor = tensor_ops(1, 0, &[1], &[1]);
    let mut pickle = vec![0x80, 2, b'}'];
    pickle.extend(unicode("a.b"));
    pickle.extend(&tensor);
    pickle.push(b's');
    pickle.extend(unicode("a"));
    pickle.push(b'}');
    pickle.extend(unicode("b"));
    pickle.extend(&tensor);
    pickle.extend(b"ss.");
    let message = crafted_error(&pickle, &[("0", &floats(&[1.0]))]);
    assert_contains(&message, "two tensors have the name a.b");
}

#[test]
fn long_names_limited() {
    // {K: {K: ... {K: tensor}}} with a 60 KB key K and 200 dicts.
    let key = "k".repeat(60_000);
    let mut pickle = vec![0x80, 2, b'}'];
    pickle.extend(unicode(&key));
    pickle.extend(b"q\x00");
    for _ in 1..200 {
        pickle.extend(b"}h\x00");
    }
    pickle.extend(tensor_ops(1, 0, &[1], &[1]));
    pickle.extend(std::iter::repeat_n(b's', 200));
    pickle.push(b'.');
    let message = crafted_error(&pickle, &[("0", &floats(&[1.0]))]);
    assert_contains(&message, "names of the tensors add up to more than");
}

#[test]
fn too_many_dimensions() {
    let size = [1; 65];
    let message = crafted_error(
        &dict_of_tensor(&tensor_ops(1, 0, &size, &size)),
        &[("0", &floats(&[1.0]))],
    );
    assert_contains(&message, "has 65 items, more than the 64");
}

#[test]
fn too_many_arguments() {
    let mut pickle = vec![0x80, 2];
    pickle.extend(global("torch", "Size"));
    pickle.push(b'(');
    pickle.extend(std::iter::repeat_n(b'N', 9));
    pickle.extend(b"tR.");
    let message = crafted_error(&pickle, &[]);
    assert_contains(&message, "the arguments of REDUCE has 9 items");
}

#[test]
fn string_length_past_end() {
    let mut pickle = vec![0x80, 2, b'X'];
    pickle.extend(u32::MAX.to_le_bytes());
    pickle.extend(b"abc.");
    let message = crafted_error(&pickle, &[]);
    assert_contains(&message, "needs 4294967295 bytes");
    assert_contains(&message, "BINUNICODE");
}

#[test]
fn unicode8_length_past_end() {
    let mut pickle = vec![0x80, 4, 0x8d];
    pickle.extend(u64::MAX.to_le_bytes());
    pickle.push(b'.');
    let message = crafted_error(&pickle, &[]);
    assert_contains(&message, "BINUNICODE8");
    assert_contains(&message, "truncated");
}

#[test]
fn unknown_opcode() {
    let message = crafted_error(&[0x80, 2, 0xff, b'.'], &[]);
    assert_contains(&message, "byte 2");
    assert_contains(&message, "unknown opcode 0xff");
}

#[test]
fn ext_opcode_rejected() {
    let message = crafted_error(&[0x80, 2, 0x82, 1, b'.'], &[]);
    assert_contains(&message, "(EXT1)");
    assert_contains(&message, "extension registry");
}

#[test]
fn obj_opcode_rejected() {
    let mut pickle = vec![0x80, 2, b'('];
    pickle.extend(global("collections", "OrderedDict"));
    pickle.extend(b"o.");
    let message = crafted_error(&pickle, &[]);
    assert_contains(&message, "(OBJ)");
}

#[test]
fn text_persid_rejected() {
    let message = crafted_error(b"\x80\x02Pstorage\n.", &[]);
    assert_contains(&message, "(PERSID)");
}

#[test]
fn getattr_rejected() {
    let message = crafted_error(&global("builtins", "getattr"), &[]);
    assert_contains(&message, "rejected the global builtins.getattr");
}

#[test]
fn long_global_name_rejected() {
    let module = format!("torch.nn.modules.{}", "x".repeat(2000));
    let message = crafted_error(&global(&module, "Linear"), &[]);
    assert_contains(&message, "module and name have 2023 bytes");
}

#[test]
fn torch_load_rejected() {
    // A global under torch that is not on the allow-list.
    let message = crafted_error(&global("torch", "load"), &[]);
    assert_contains(&message, "rejected the global torch.load");
}

#[test]
fn missing_stop() {
    let message = crafted_error(&[0x80, 2, b'}'], &[]);
    assert_contains(&message, "without a STOP opcode");
}

#[test]
fn stack_underflow() {
    let message = crafted_error(&[0x80, 2, b's', b'.'], &[]);
    assert_contains(&message, "the stack is empty");
}

#[test]
fn pop_below_mark() {
    // The MARK hides the dict from SETITEM.
    let mut pickle = vec![0x80, 2, b'}', b'('];
    pickle.extend(unicode("a"));
    pickle.extend(b"Ns.");
    let message = crafted_error(&pickle, &[]);
    assert_contains(&message, "the stack is empty");
}

#[test]
fn memo_get_unknown() {
    let message = crafted_error(&[0x80, 2, b'j', 9, 9, 9, 9, b'.'], &[]);
    assert_contains(&message, "memo entry 151587081 was never stored");
}

#[test]
fn setitem_on_list_rejected() {
    let mut pickle = vec![0x80, 2, b']'];
    pickle.extend(unicode("a"));
    pickle.extend(b"Ns.");
    let message = crafted_error(&pickle, &[]);
    assert_contains(&message, "setting an item of a list");
}

#[test]
fn reduce_on_string_rejected() {
    let mut pickle = vec![0x80, 2];
    pickle.extend(unicode("os.system"));
    pickle.extend(b")R.");
    let message = crafted_error(&pickle, &[]);
    assert_contains(&message, "REDUCE calls a string");
}

#[test]
fn tensor_root_rejected() {
    let mut pickle = vec![0x80, 2];
    pickle.extend(tensor_ops(1, 0, &[1], &[1]));
    pickle.push(b'.');
    let message = crafted_error(&pickle, &[("0", &floats(&[1.0]))]);
    assert_contains(&message, "the saved object is a tensor");
}

#[test]
fn corrupted_bytes_never_panic() {
    let original = std::fs::read(fixture("module.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupted.pt");
    let mut read_count = 0;
    for at in (0..original.len()).step_by(5) {
        for replacement in [0x00u8, 0xff, original[at] ^ 0x01] {
            let mut bytes = original.clone();
            bytes[at] = replacement;
            std::fs::write(&path, &bytes).unwrap();
            // Either result is fine; a panic or an abort fails the test.
            let _ = torch_file::read(&path);
            read_count += 1;
        }
    }
    assert!(read_count > 1000);
}

#[test]
fn truncations_never_panic() {
    let original = std::fs::read(fixture("state_dict.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.pt");
    for len in (0..original.len()).step_by(3) {
        std::fs::write(&path, &original[..len]).unwrap();
        let error = torch_file::read(&path).unwrap_err();
        assert!(!error.to_string().is_empty());
    }
}
