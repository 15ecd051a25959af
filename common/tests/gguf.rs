//! Tests of the GGUF reader against fixtures written by gguf-py
//! (`reference/gguf_vectors.py`), and of its rejection of malformed files.

use std::path::{Path, PathBuf};

use common::gguf::{GgmlType, GgufFile, Value};
use common::Error;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

fn fixture_path() -> PathBuf {
    fixture_dir().join("types.gguf")
}

fn open_fixture() -> GgufFile {
    GgufFile::open(&fixture_path()).unwrap()
}

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(fixture_path()).unwrap()
}

/// Writes `bytes` to a temporary file and opens it, returning the error
/// message. Panics if the open succeeds.
fn open_error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = GgufFile::open(&path).unwrap_err();
    assert!(
        matches!(err, Error::Format { .. }),
        "expected a format error, got {err:?}"
    );
    err.to_string()
}

/// Returns the byte offset just past the length-prefixed `name` in `bytes`.
fn end_of_string(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let start = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap_or_else(|| panic!("{name} not found in the fixture"));
    start + needle.len()
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn assert_contains(message: &str, fact: &str) {
    assert!(
        message.contains(fact),
        "message does not contain {fact:?}: {message}"
    );
}

#[test]
fn header_fields() {
    let gguf = open_fixture();
    assert_eq!(gguf.version(), 3);
    assert_eq!(gguf.alignment(), 64);
    assert_eq!(gguf.data_offset() % 64, 0);
    assert_eq!(gguf.metadata().len(), 17);
    assert_eq!(gguf.tensors().len(), 14);
}

#[test]
fn metadata_values() {
    let gguf = open_fixture();
    let get = |key: &str| {
        gguf.get(key)
            .unwrap_or_else(|| panic!("missing key {key}"))
            .clone()
    };
    assert_eq!(get("general.architecture"), Value::String("llama".into()));
    assert_eq!(get("general.alignment"), Value::U32(64));
    assert_eq!(get("general.name").as_str(), Some("gguf reader fixture"));
    assert_eq!(get("test.u8"), Value::U8(200));
    assert_eq!(get("test.i8"), Value::I8(-100));
    assert_eq!(get("test.u16"), Value::U16(60000));
    assert_eq!(get("test.i16"), Value::I16(-30000));
    assert_eq!(get("test.u32"), Value::U32(4_000_000_000));
    assert_eq!(get("test.i32"), Value::I32(-2_000_000_000));
    assert_eq!(get("test.f32"), Value::F32(0.15625));
    assert_eq!(get("test.bool"), Value::Bool(true));
    assert_eq!(get("test.u64"), Value::U64((1 << 40) + 1));
    assert_eq!(get("test.i64"), Value::I64(-(1 << 40)));
    assert_eq!(get("test.f64"), Value::F64(std::f64::consts::PI));

    assert_eq!(get("test.u32").as_u64(), Some(4_000_000_000));
    assert_eq!(get("test.i8").as_i64(), Some(-100));
    assert_eq!(get("test.i8").as_u64(), None);
    assert_eq!(get("test.f32").as_f64(), Some(0.15625));

    let strings: Vec<_> = get("test.strings")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(strings, ["alpha", "\u{3b2}eta", ""]);
    assert_eq!(
        get("test.i32s"),
        Value::Array(vec![Value::I32(1), Value::I32(-2), Value::I32(3)])
    );
    assert_eq!(
        get("test.nested"),
        Value::Array(vec![
            Value::Array(vec![Value::I32(1), Value::I32(2)]),
            Value::Array(vec![Value::I32(3)]),
        ])
    );
    assert!(gguf.get("test.missing").is_none());
}

#[test]
fn tensor_infos_and_shapes() {
    let gguf = open_fixture();
    let expected: [(&str, GgmlType, &[u64]); 14] = [
        ("f32", GgmlType::F32, &[40]),
        ("f16", GgmlType::F16, &[8, 3, 2]),
        ("bf16", GgmlType::BF16, &[16, 4]),
        ("q4_0", GgmlType::Q4_0, &[64, 3]),
        ("q4_1", GgmlType::Q4_1, &[64, 3]),
        ("q5_0", GgmlType::Q5_0, &[64, 3]),
        ("q5_1", GgmlType::Q5_1, &[64, 3]),
        ("q8_0", GgmlType::Q8_0, &[32, 2, 1, 2]),
        ("q2_k", GgmlType::Q2_K, &[512, 2]),
        ("q3_k", GgmlType::Q3_K, &[512, 2]),
        ("q4_k", GgmlType::Q4_K, &[512, 2]),
        ("q5_k", GgmlType::Q5_K, &[512, 2]),
        ("q6_k", GgmlType::Q6_K, &[512, 2]),
        ("iq4_nl", GgmlType::Other(20), &[32, 1]),
    ];
    for (info, (name, ggml_type, dims)) in gguf.tensors().iter().zip(expected) {
        assert_eq!(info.name, name);
        assert_eq!(info.ggml_type, ggml_type, "{name}");
        assert_eq!(info.dims, dims, "{name}");
        assert_eq!(info.offset % 64, 0, "{name}");
        let reversed: Vec<i64> = dims.iter().rev().map(|&d| d as i64).collect();
        assert_eq!(info.torch_shape(), reversed, "{name}");
        assert_eq!(info.n_elements(), dims.iter().product::<u64>(), "{name}");
        assert_eq!(gguf.tensor(name), Some(info));
    }
    assert_eq!(gguf.tensor("q4_k").unwrap().torch_shape(), [2, 512]);
    assert_eq!(gguf.tensor("q4_k").unwrap().n_bytes(), Some(576));
    assert_eq!(gguf.tensor("iq4_nl").unwrap().ggml_type.name(), "IQ4_NL");
}

/// Every supported tensor dequantizes to the same f32 bits as
/// `gguf.quants.dequantize`, because both evaluate the same f32 products in
/// the same order. No tolerance is needed.
#[test]
fn dequantize_matches_gguf_py() {
    let gguf = open_fixture();
    let expected_bytes = std::fs::read(fixture_dir().join("types_expected.safetensors")).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&expected_bytes).unwrap();
    let mut checked = 0;
    for info in gguf.tensors() {
        if !info.ggml_type.can_dequantize() {
            continue;
        }
        let view = expected.tensor(&info.name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{}", info.name);
        let want: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let want_shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();

        let tensor = gguf.dequantize(info).unwrap();
        assert_eq!(tensor.kind(), tch::Kind::Float, "{}", info.name);
        assert_eq!(tensor.device(), tch::Device::Cpu, "{}", info.name);
        assert_eq!(tensor.size(), want_shape, "{}", info.name);
        let got = Vec::<f32>::try_from(tensor.flatten(0, -1)).unwrap();
        assert_eq!(got.len(), want.len(), "{}", info.name);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{} element {i}: got {g}, gguf-py gives {w}",
                info.name
            );
        }

        let bytes = gguf.tensor_bytes(info).unwrap();
        let flat = common::gguf::dequantize(info.ggml_type, bytes, want.len()).unwrap();
        assert_eq!(flat, want, "{}", info.name);
        checked += 1;
    }
    assert_eq!(checked, 13);
}

#[test]
fn unsupported_type_is_named() {
    let gguf = open_fixture();
    let info = gguf.tensor("iq4_nl").unwrap();
    assert_eq!(gguf.tensor_bytes(info).unwrap().len(), 18);
    let err = gguf.dequantize(info).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    let message = err.to_string();
    assert_contains(&message, "tensor iq4_nl");
    assert_contains(&message, "IQ4_NL (20)");
    assert_contains(&message, "Q6_K");
}

#[test]
fn version_2_is_accepted() {
    let mut bytes = fixture_bytes();
    put_u32(&mut bytes, 4, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let gguf = GgufFile::open(&path).unwrap();
    assert_eq!(gguf.version(), 2);
    assert_eq!(gguf.tensors().len(), 14);
}

#[test]
fn truncated_in_header() {
    let bytes = fixture_bytes();
    let message = open_error(&bytes[..12]);
    assert_contains(&message, "truncated");
    assert_contains(&message, "tensor count at byte offset 8");
}

#[test]
fn truncated_in_metadata() {
    let bytes = fixture_bytes();
    let cut = end_of_string(&bytes, "test.strings") + 20;
    let message = open_error(&bytes[..cut]);
    assert_contains(&message, "truncated");
    assert_contains(&message, "test.strings");
}

#[test]
fn truncated_in_data() {
    let gguf = open_fixture();
    let last = gguf.tensors().iter().max_by_key(|t| t.offset).unwrap();
    let cut = (gguf.data_offset() + last.offset + 1) as usize;
    let name = format!("data of tensor {}", last.name);
    drop(gguf);
    let message = open_error(&fixture_bytes()[..cut]);
    assert_contains(&message, &name);
    assert_contains(&message, "extends past the end of the file");
}

#[test]
fn empty_file() {
    let message = open_error(&[]);
    assert_contains(&message, "empty");
}

#[test]
fn wrong_magic() {
    let mut bytes = fixture_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let message = open_error(&bytes);
    assert_contains(&message, "magic");
    assert_contains(&message, "GGML");
}

#[test]
fn version_1_rejected() {
    let mut bytes = fixture_bytes();
    put_u32(&mut bytes, 4, 1);
    let message = open_error(&bytes);
    assert_contains(&message, "version 1");
}

#[test]
fn big_endian_version_rejected() {
    let mut bytes = fixture_bytes();
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    let message = open_error(&bytes);
    assert_contains(&message, "big-endian");
}

#[test]
fn string_length_past_end() {
    let mut bytes = fixture_bytes();
    // The first key's length follows the 24-byte header.
    put_u64(&mut bytes, 24, 1 << 40);
    let message = open_error(&bytes);
    assert_contains(&message, "length 1099511627776");
    assert_contains(&message, "byte offset 24");
}

#[test]
fn array_length_past_end() {
    let mut bytes = fixture_bytes();
    // Array values start with the item type (u32), then the length (u64).
    let at = end_of_string(&bytes, "test.i32s") + 4 + 4;
    put_u64(&mut bytes, at, 1 << 50);
    let message = open_error(&bytes);
    assert_contains(&message, "array length of key test.i32s 1125899906842624");
    assert_contains(&message, &format!("byte offset {at}"));
}

#[test]
fn non_utf8_key() {
    let mut bytes = fixture_bytes();
    let at = end_of_string(&bytes, "test.u8") - 2;
    bytes[at] = 0xFF;
    let message = open_error(&bytes);
    assert_contains(&message, "not valid UTF-8");
    assert_contains(&message, &format!("invalid byte at offset {at}"));
}

#[test]
fn unknown_value_type() {
    let mut bytes = fixture_bytes();
    let at = end_of_string(&bytes, "test.u16");
    put_u32(&mut bytes, at, 13);
    let message = open_error(&bytes);
    assert_contains(&message, "unknown value type 13 for key test.u16");
    assert_contains(&message, &format!("byte offset {at}"));
}

#[test]
fn absurd_tensor_count() {
    let mut bytes = fixture_bytes();
    put_u64(&mut bytes, 8, 1 << 60);
    let message = open_error(&bytes);
    assert_contains(&message, "tensor count 1152921504606846976");
    assert_contains(&message, "byte offset 8");
}

#[test]
fn absurd_metadata_count() {
    let mut bytes = fixture_bytes();
    put_u64(&mut bytes, 16, u64::MAX);
    let message = open_error(&bytes);
    assert_contains(&message, &format!("metadata entry count {}", u64::MAX));
}

#[test]
fn tensor_offset_past_end() {
    let mut bytes = fixture_bytes();
    // q4_k info: name, n_dims (u32), 2 dims (u64), type (u32), offset (u64).
    let at = end_of_string(&bytes, "q4_k") + 4 + 16 + 4;
    put_u64(&mut bytes, at, 64 * 1_000_000);
    let message = open_error(&bytes);
    assert_contains(&message, "data of tensor q4_k");
    assert_contains(&message, "data offset 64000000");
}

#[test]
fn tensor_offset_misaligned() {
    let mut bytes = fixture_bytes();
    let at = end_of_string(&bytes, "q4_k") + 4 + 16 + 4;
    put_u64(&mut bytes, at, 2112 + 8);
    let message = open_error(&bytes);
    assert_contains(&message, "data offset 2120 of tensor q4_k");
    assert_contains(&message, "alignment 64");
}

#[test]
fn too_many_dims() {
    let mut bytes = fixture_bytes();
    let at = end_of_string(&bytes, "q4_k");
    put_u32(&mut bytes, at, 5);
    let message = open_error(&bytes);
    assert_contains(&message, "tensor q4_k has 5 dimensions");
}

#[test]
fn element_count_overflow() {
    let mut bytes = fixture_bytes();
    // Second dimension of q4_k (first is 512).
    let at = end_of_string(&bytes, "q4_k") + 4 + 8;
    put_u64(&mut bytes, at, 1 << 60);
    let message = open_error(&bytes);
    assert_contains(&message, "element count of tensor q4_k");
    assert_contains(&message, "overflows");
}

#[test]
fn row_not_whole_blocks() {
    let mut bytes = fixture_bytes();
    let at = end_of_string(&bytes, "q4_k") + 4;
    put_u64(&mut bytes, at, 500);
    let message = open_error(&bytes);
    assert_contains(&message, "rows of 500 elements");
    assert_contains(&message, "block size 256");
}

#[test]
fn bad_alignment_value() {
    let mut bytes = fixture_bytes();
    // general.alignment: key, value type (u32), value (u32).
    let at = end_of_string(&bytes, "general.alignment") + 4;
    put_u32(&mut bytes, at, 48);
    let message = open_error(&bytes);
    assert_contains(&message, "general.alignment");
    assert_contains(&message, "U32(48)");
}

#[test]
fn duplicate_tensor_name() {
    let mut bytes = fixture_bytes();
    let at = end_of_string(&bytes, "q4_1") - 1;
    bytes[at] = b'0';
    let message = open_error(&bytes);
    assert_contains(&message, "duplicate tensor name q4_0");
}

/// Every truncation before the end of the last tensor's data is an error.
#[test]
fn every_truncation_rejected() {
    let gguf = open_fixture();
    let data_end = gguf
        .tensors()
        .iter()
        .map(|t| gguf.data_offset() + t.offset + t.n_bytes().unwrap())
        .max()
        .unwrap() as usize;
    drop(gguf);
    let bytes = fixture_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    for len in 0..data_end {
        std::fs::write(&path, &bytes[..len]).unwrap();
        assert!(GgufFile::open(&path).is_err(), "cut at {len} bytes opened");
    }
    std::fs::write(&path, &bytes[..data_end]).unwrap();
    assert!(GgufFile::open(&path).is_ok());
}

/// Overwriting any byte before the data section with 0x00, 0x7F, 0x80 or
/// 0xFF gives either an error or a file whose tensors all dequantize or
/// return an error, never a panic.
#[test]
fn corrupt_header_bytes_never_panic() {
    let data_offset = open_fixture().data_offset() as usize;
    let bytes = fixture_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.gguf");
    let mut opened = 0;
    for at in 0..data_offset {
        for value in [0x00, 0x7F, 0x80, 0xFF] {
            if bytes[at] == value {
                continue;
            }
            let mut corrupt = bytes.clone();
            corrupt[at] = value;
            std::fs::write(&path, &corrupt).unwrap();
            let Ok(gguf) = GgufFile::open(&path) else {
                continue;
            };
            opened += 1;
            for info in gguf.tensors() {
                let _ = gguf.dequantize(info);
            }
        }
    }
    // Edits to metadata values and padding leave a valid file.
    assert!(opened > 0);
}

#[test]
fn missing_file_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = GgufFile::open(&dir.path().join("absent.gguf")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

/// Prints the dequantization time of 100M Q4_1 elements (random blocks),
/// including the allocation of the output. Run with
/// `cargo test -p common --test gguf -- --ignored --nocapture q4_1_throughput`,
/// adding `--release` for the release profile.
#[test]
#[ignore = "timing, not a check"]
fn q4_1_throughput() {
    const N: usize = 100_000_000;
    let mut bytes = vec![0u8; N / 32 * 20];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for b in bytes.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    // Finite f16 scale and min in every block.
    for block in bytes.chunks_exact_mut(20) {
        block[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        block[2..4].copy_from_slice(&half::f16::from_f32(-0.08).to_le_bytes());
    }
    let start = std::time::Instant::now();
    let values = common::gguf::dequantize(GgmlType::Q4_1, &bytes, N).unwrap();
    let elapsed = start.elapsed();
    println!(
        "Q4_1: {N} elements in {:.3} s ({:.2} ns/element), checksum {}",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e9 / N as f64,
        values.iter().map(|&v| v as f64).sum::<f64>()
    );
}

/// Dequantizes every tensor of the GGUF file named by `GGUF_PATH`, checks
/// that all values are finite and prints the time taken. When
/// `GGUF_EXPECTED` names a safetensors file of f32 values (for example from
/// `gguf.quants.dequantize`), the tensors it contains must match bit for bit.
#[test]
#[ignore = "needs a model file in GGUF_PATH"]
fn model_file_dequantizes() {
    let path = PathBuf::from(std::env::var("GGUF_PATH").expect("set GGUF_PATH to a .gguf file"));
    let gguf = GgufFile::open(&path).unwrap();
    let start = std::time::Instant::now();
    let mut n_elements = 0;
    for info in gguf.tensors() {
        let tensor = gguf.dequantize(info).unwrap();
        assert_eq!(tensor.size(), info.torch_shape(), "{}", info.name);
        let finite = tensor.isfinite().all().int64_value(&[]);
        assert_eq!(finite, 1, "{} has non-finite values", info.name);
        n_elements += info.n_elements();
    }
    println!(
        "{}: {} tensors, {n_elements} elements dequantized in {:.3} s",
        path.display(),
        gguf.tensors().len(),
        start.elapsed().as_secs_f64()
    );

    let Ok(expected_path) = std::env::var("GGUF_EXPECTED") else {
        return;
    };
    let expected_bytes = std::fs::read(expected_path).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&expected_bytes).unwrap();
    for (name, view) in expected.tensors() {
        let info = gguf.tensor(&name).unwrap();
        let got = gguf.dequantize(info).unwrap();
        let got = Vec::<f32>::try_from(got.flatten(0, -1)).unwrap();
        let want: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}");
        let mismatches = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count();
        assert_eq!(mismatches, 0, "{name}: {mismatches} values differ");
        println!("{name}: {} values match", want.len());
    }
}
