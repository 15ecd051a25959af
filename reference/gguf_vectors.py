"""Write the fixtures of the GGUF reader tests (common/tests/gguf.rs).

Outputs, in common/tests/fixtures/gguf/:

- types.gguf: a GGUF v3 file written by gguf-py's GGUFWriter with a data
  alignment of 64. It contains one tensor per ggml type that the Rust reader
  dequantizes (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K,
  Q5_K, Q6_K), named after its type in lower case. An IQ4_NL tensor, which the
  reader must reject, and metadata keys of every GGUF value type complete it.
- types_expected.safetensors: for each supported tensor, the f32 values that
  gguf.quants.dequantize returns, in the tensor's PyTorch shape.

Quantized bytes come from gguf.quants.quantize of normal samples where gguf-py
implements quantization (BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0). For the other
types the blocks are uniform random bytes whose f16 scale fields (d, dmin) are
overwritten with finite values from [0.01, 0.1), so that no value is NaN or
infinite. numpy's generator is seeded, so reruns with the same numpy and gguf
versions write identical files.

Run from the repository root:

    ~/.cache/modelzoo/venv/bin/python reference/gguf_vectors.py
"""

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

SEED = 20240607
ALIGNMENT = 64
OUT_DIR = Path(__file__).resolve().parent.parent / "common/tests/fixtures/gguf"

# Tensor shapes in PyTorch order. The last dimension is GGUF's dims[0], and
# every row is a whole number of blocks (of 32 or 256 elements).
QUANTIZED_SHAPES = {
    T.BF16: (4, 16),
    T.Q4_0: (3, 64),
    T.Q4_1: (3, 64),
    T.Q5_0: (3, 64),
    T.Q5_1: (3, 64),
    T.Q8_0: (2, 1, 2, 32),
    T.Q2_K: (2, 512),
    T.Q3_K: (2, 512),
    T.Q4_K: (2, 512),
    T.Q5_K: (2, 512),
    T.Q6_K: (2, 512),
}
# Types without a quantizer in gguf-py 0.19, and the byte offsets of their
# f16 scale fields within a block (as split by dequantize_blocks in
# gguf/quants.py).
SCALE_OFFSETS = {
    T.Q2_K: (80, 82),
    T.Q3_K: (108,),
    T.Q4_K: (0, 2),
    T.Q5_K: (0, 2),
    T.Q6_K: (208,),
    T.IQ4_NL: (0,),
}

METADATA = [
    ("general.name", "gguf reader fixture", GGUFValueType.STRING),
    ("test.u8", 200, GGUFValueType.UINT8),
    ("test.i8", -100, GGUFValueType.INT8),
    ("test.u16", 60000, GGUFValueType.UINT16),
    ("test.i16", -30000, GGUFValueType.INT16),
    ("test.u32", 4_000_000_000, GGUFValueType.UINT32),
    ("test.i32", -2_000_000_000, GGUFValueType.INT32),
    ("test.f32", 0.15625, GGUFValueType.FLOAT32),
    ("test.bool", True, GGUFValueType.BOOL),
    ("test.u64", 2**40 + 1, GGUFValueType.UINT64),
    ("test.i64", -(2**40), GGUFValueType.INT64),
    ("test.f64", 3.141592653589793, GGUFValueType.FLOAT64),
    ("test.strings", ["alpha", "\u03b2eta", ""], GGUFValueType.ARRAY),
    ("test.i32s", [1, -2, 3], GGUFValueType.ARRAY),
    ("test.nested", [[1, 2], [3]], GGUFValueType.ARRAY),
]


def random_blocks(rng: np.random.Generator, qtype: T, shape: tuple[int, ...]) -> np.ndarray:
    """Return random quantized bytes for `shape` with finite f16 scales."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n_blocks = int(np.prod(shape)) // block_size
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for offset in SCALE_OFFSETS[qtype]:
        scales = rng.uniform(0.01, 0.1, size=n_blocks).astype(np.float16)
        blocks[:, offset : offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    row_bytes = shape[-1] // block_size * type_size
    return blocks.reshape(*shape[:-1], row_bytes)


def quantized_bytes(rng: np.random.Generator, qtype: T, shape: tuple[int, ...]) -> np.ndarray:
    """Return the bytes of a `qtype` tensor of PyTorch shape `shape`."""
    if qtype in SCALE_OFFSETS:
        return random_blocks(rng, qtype, shape)
    data = rng.standard_normal(shape).astype(np.float32)
    return quantize(data, qtype)


def build_tensors(rng: np.random.Generator) -> dict[str, tuple[T, np.ndarray]]:
    """Return the fixture tensors as name -> (type, raw bytes as uint8)."""
    tensors = {
        "f32": (T.F32, rng.standard_normal(40).astype(np.float32).view(np.uint8)),
        "f16": (
            T.F16,
            rng.standard_normal((2, 3, 8)).astype(np.float16).view(np.uint8),
        ),
    }
    for qtype, shape in QUANTIZED_SHAPES.items():
        tensors[qtype.name.lower()] = (qtype, quantized_bytes(rng, qtype, shape))
    tensors["iq4_nl"] = (T.IQ4_NL, random_blocks(rng, T.IQ4_NL, (1, 32)))
    return tensors


def write_gguf(path: Path, tensors: dict[str, tuple[T, np.ndarray]]) -> None:
    writer = GGUFWriter(path, "llama")
    writer.add_custom_alignment(ALIGNMENT)
    for key, value, value_type in METADATA:
        writer.add_key_value(key, value, value_type)
    for name, (qtype, raw) in tensors.items():
        writer.add_tensor(name, raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def check_round_trip(path: Path, tensors: dict[str, tuple[T, np.ndarray]]) -> None:
    """Check that gguf-py's reader returns the bytes and types written."""
    reader = GGUFReader(path)
    assert [t.name for t in reader.tensors] == list(tensors)
    for tensor in reader.tensors:
        qtype, raw = tensors[tensor.name]
        assert tensor.tensor_type == qtype, tensor.name
        assert tensor.data.tobytes() == raw.tobytes(), tensor.name


def main() -> None:
    rng = np.random.default_rng(SEED)
    tensors = build_tensors(rng)
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    gguf_path = OUT_DIR / "types.gguf"
    write_gguf(gguf_path, tensors)
    check_round_trip(gguf_path, tensors)

    expected = {}
    for name, (qtype, raw) in tensors.items():
        if qtype == T.IQ4_NL:
            continue
        values = np.ascontiguousarray(dequantize(raw, qtype), dtype=np.float32)
        assert np.isfinite(values).all(), name
        expected[name] = values
    save_file(expected, str(OUT_DIR / "types_expected.safetensors"))

    for path in sorted(OUT_DIR.iterdir()):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
