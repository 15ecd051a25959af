"""Writes the `torch.save` fixtures of the `common` crate.

Writes into common/tests/fixtures/torch/:

- Files that `common::torch_file::read` must load, each with the expected
  tensors in a `.safetensors` file of the same stem. The metadata key
  "expected" of each expected file is a JSON object with the state-dict
  order of the names ("order"), the class of the root module ("root_class",
  null for a dict) and the integer attributes of the root module
  ("root_ints"):
  - state_dict.pt: a state dict with f32, f64, f16, bf16, i64, i32, i16, i8,
    u8 and bool tensors, a transposed tensor, a view with a storage offset,
    two views of one storage, a 0-d scalar and an empty tensor.
    state_dict_protocol5.pt contains the same tensors, pickled with protocol 5.
  - module.pt: a whole pickled `torch.nn.Sequential` with Linear and
    LayerNorm layers, a Linear without bias, a persistent buffer, a
    non-persistent buffer and an integer attribute. module_protocol4.pt is
    the same module pickled with protocol 4.
  - dall_e_block.pt: a whole pickled `dall_e.encoder.EncoderBlock`, the
    residual block of OpenAI's DALL-E dVAE encoder, with
    `dall_e.utils.Conv2d` layers.
  - nested.pt: a checkpoint dict with a state dict nested inside it, next to
    integers, strings and a list.
- Files that it must reject, without an expected file:
  - pickles that call os.system, posix.system, builtins.eval and
    subprocess.Popen through REDUCE, NEWOBJ, STACK_GLOBAL and INST. They are
    written opcode by opcode and never unpickled.
  - a storage offset past the end of its storage and a storage shorter than
    its declared size.
  - a big-endian archive, a deflate-compressed archive, a truncated archive
    and an archive without data.pkl.
  - the legacy (pre-1.6) format and random bytes.

The output is the same on every run: tensors come from a seeded generator,
torch.save writes no timestamps, and the hand-built archives use a fixed
date.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/torch_files.py
"""

import io
import json
import pickle
import pickletools
import random
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from dall_e.encoder import EncoderBlock
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "common" / "tests" / "fixtures" / "torch"
SEED = 1234


def state_dict_tensors(generator):
    """Return the tensors of state_dict.pt, covering every storage type."""

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=generator).to(dtype)

    def randint(low, high, *shape, dtype):
        return torch.randint(low, high, shape, generator=generator, dtype=dtype)

    base = randn(8)
    shared = randn(2, 3)
    return OrderedDict(
        [
            ("f32", randn(2, 3)),
            ("f64", randn(3, dtype=torch.float64)),
            ("f16", randn(2, 2, dtype=torch.float16)),
            ("bf16", randn(4, dtype=torch.bfloat16)),
            ("i64", randint(-(2**40), 2**40, 3, dtype=torch.int64)),
            ("i32", randint(-(2**30), 2**30, 2, 2, dtype=torch.int32)),
            ("i16", randint(-(2**15), 2**15, 3, dtype=torch.int16)),
            ("i8", randint(-128, 128, 5, dtype=torch.int8)),
            ("u8", randint(0, 256, 5, dtype=torch.uint8)),
            ("bool", randint(0, 2, 6, dtype=torch.int64).bool()),
            ("transposed", randn(3, 4).t()),
            ("offset_view", base[2:5]),
            ("shared_a", shared[0]),
            ("shared_b", shared[1]),
            ("scalar", torch.tensor(2.5)),
            ("empty", torch.zeros(0, 3)),
        ]
    )


def sequential_module(generator):
    """Return the module of module.pt, with buffers and an int attribute."""
    torch.manual_seed(SEED)
    module = torch.nn.Sequential(
        torch.nn.Linear(4, 3),
        torch.nn.LayerNorm(3),
        torch.nn.Linear(3, 2, bias=False),
    )
    module.register_buffer("running", torch.randn(3, generator=generator))
    module.register_buffer("scratch", torch.ones(2), persistent=False)
    module.n_hid = 7
    return module


def dall_e_block():
    """Return a small dall_e EncoderBlock with random weights."""
    torch.manual_seed(SEED)
    return EncoderBlock(n_in=2, n_out=4, n_layers=1, device=torch.device("cpu"))


def nested_checkpoint(generator):
    """Return a checkpoint dict with a nested state dict."""
    return {
        "epoch": 3,
        "note": "trained for the tests",
        "state_dict": OrderedDict(
            [
                ("encoder", {"w": torch.randn(2, 2, generator=generator)}),
                ("b", torch.randn(3, generator=generator)),
            ]
        ),
        "history": [torch.zeros(1)],
    }


def write_expected(path, tensors, root_class=None, root_ints=None):
    """Write the expected tensors of a fixture, in contiguous copies."""
    # One metadata key, because safetensors writes several in random order.
    expected = {"order": list(tensors), "root_class": root_class, "root_ints": root_ints or {}}
    metadata = {"expected": json.dumps(expected, sort_keys=True)}
    copies = {name: tensor.detach().contiguous().clone() for name, tensor in tensors.items()}
    save_file(copies, str(path), metadata=metadata)


def module_ints(module):
    """Return the int and bool attributes that pickling `module` stores."""
    ints = {}
    for name, value in module.__dict__.items():
        if isinstance(value, bool):
            ints[name] = int(value)
        elif isinstance(value, int):
            ints[name] = value
    return ints


def class_name(obj):
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def write_valid_fixtures(generator):
    tensors = state_dict_tensors(generator)
    torch.save(tensors, OUT / "state_dict.pt")
    torch.save(tensors, OUT / "state_dict_protocol5.pt", pickle_protocol=5)
    write_expected(OUT / "state_dict.safetensors", tensors)

    module = sequential_module(generator)
    torch.save(module, OUT / "module.pt")
    torch.save(module, OUT / "module_protocol4.pt", pickle_protocol=4)
    write_expected(
        OUT / "module.safetensors", module.state_dict(), class_name(module), module_ints(module)
    )

    block = dall_e_block()
    torch.save(block, OUT / "dall_e_block.pt")
    write_expected(
        OUT / "dall_e_block.safetensors", block.state_dict(), class_name(block), module_ints(block)
    )

    checkpoint = nested_checkpoint(generator)
    torch.save(checkpoint, OUT / "nested.pt")
    nested = OrderedDict(
        [
            ("state_dict.encoder.w", checkpoint["state_dict"]["encoder"]["w"]),
            ("state_dict.b", checkpoint["state_dict"]["b"]),
        ]
    )
    write_expected(OUT / "nested.safetensors", nested)


# Pickle opcodes, written by hand so that no hostile object is ever built.


def unicode(text):
    data = text.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def short_unicode(text):
    data = text.encode("utf-8")
    return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data


def global_(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")


def small_int(value):
    return pickle.BININT1 + bytes([value])


def tensor_pickle(key, numel, offset, size, stride):
    """Return the opcodes of a float32 tensor as torch.save writes it."""
    persistent_id = (
        pickle.MARK
        + unicode("storage")
        + global_("torch", "FloatStorage")
        + unicode(key)
        + unicode("cpu")
        + small_int(numel)
        + pickle.TUPLE
    )
    return (
        global_("torch._utils", "_rebuild_tensor_v2")
        + pickle.MARK
        + persistent_id
        + pickle.BINPERSID
        + small_int(offset)
        + pickle.MARK
        + b"".join(small_int(n) for n in size)
        + pickle.TUPLE
        + pickle.MARK
        + b"".join(small_int(n) for n in stride)
        + pickle.TUPLE
        + pickle.NEWFALSE
        + global_("collections", "OrderedDict")
        + pickle.EMPTY_TUPLE
        + pickle.REDUCE
        + pickle.TUPLE
        + pickle.REDUCE
    )


def dict_pickle(items):
    """Return a protocol 2 pickle of a dict from (key, value opcodes) pairs."""
    body = b"".join(unicode(key) + value for key, value in items)
    start = pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK
    return start + body + pickle.SETITEMS + pickle.STOP


def call_pickle(module, name, argument, opcode=pickle.REDUCE):
    """Return a protocol 2 pickle that calls module.name(argument)."""
    args = unicode(argument) + pickle.TUPLE1
    return pickle.PROTO + b"\x02" + global_(module, name) + args + opcode + pickle.STOP


def write_torch_zip(
    path,
    data_pkl,
    storages=(),
    byteorder=b"little",
    with_data_pkl=True,
    compression=zipfile.ZIP_STORED,
):
    """Write an archive laid out as torch.save lays it out."""
    prefix = path.stem
    entries = []
    if with_data_pkl:
        entries.append(("data.pkl", data_pkl))
    entries.append(("byteorder", byteorder))
    entries += [(f"data/{key}", data) for key, data in storages]
    entries.append(("version", b"3\n"))
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(f"{prefix}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, data)


def floats(*values):
    return struct.pack(f"<{len(values)}f", *values)


def write_legacy(path, obj):
    """Save `obj` in the legacy format with fixed storage keys.

    The legacy format names each storage by its memory address, so the keys
    are replaced by zero-padded indices of the same length.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    # The stream is five pickles: magic number, protocol version, system
    # info, the object, and the list of storage keys.
    stream = io.BytesIO(data)
    for _ in range(4):
        for _ in pickletools.genops(stream):
            pass
    keys = [arg for op, arg, _ in pickletools.genops(stream) if op.name == "BINUNICODE"]
    for index, key in enumerate(keys):
        length = struct.pack("<I", len(key))
        fixed = str(index).zfill(len(key))
        data = data.replace(
            pickle.BINUNICODE + length + key.encode(), pickle.BINUNICODE + length + fixed.encode()
        )
    path.write_bytes(data)


def write_rejected_fixtures(generator):
    command = "echo this file ran a command"
    write_torch_zip(OUT / "reduce_os_system.pt", call_pickle("os", "system", command))
    write_torch_zip(OUT / "reduce_builtins_eval.pt", call_pickle("builtins", "eval", "1 + 1"))
    write_torch_zip(
        OUT / "newobj_subprocess_popen.pt",
        call_pickle("subprocess", "Popen", command, opcode=pickle.NEWOBJ),
    )
    stack_global = (
        pickle.PROTO
        + b"\x04"
        + short_unicode("os")
        + pickle.MEMOIZE
        + short_unicode("system")
        + pickle.MEMOIZE
        + pickle.STACK_GLOBAL
        + short_unicode(command)
        + pickle.TUPLE1
        + pickle.REDUCE
        + pickle.STOP
    )
    write_torch_zip(OUT / "stack_global_os_system.pt", stack_global)
    # A valid tensor first, then a call: the reader must reject the whole file.
    after_tensor = dict_pickle(
        [
            ("w", tensor_pickle("0", 4, 0, (4,), (1,))),
            ("x", global_("posix", "system") + unicode(command) + pickle.TUPLE1 + pickle.REDUCE),
        ]
    )
    write_torch_zip(
        OUT / "reduce_after_tensor.pt", after_tensor, [("0", floats(1, 2, 3, 4))]
    )
    # INST names its class inline and calls it with the items above the mark.
    inst = pickle.MARK + unicode(command) + pickle.INST + b"os\nsystem\n" + pickle.STOP
    write_torch_zip(OUT / "inst_os_system.pt", pickle.PROTO + b"\x02" + inst)

    # Elements 3..6 of a storage of 4 elements.
    past_end = dict_pickle([("w", tensor_pickle("0", 4, 3, (4,), (1,)))])
    write_torch_zip(
        OUT / "storage_offset_out_of_range.pt", past_end, [("0", floats(1, 2, 3, 4))]
    )
    # The persistent id declares 8 elements but the entry has 4.
    short = dict_pickle([("w", tensor_pickle("0", 8, 0, (8,), (1,)))])
    write_torch_zip(OUT / "storage_too_short.pt", short, [("0", floats(1, 2, 3, 4))])
    valid = dict_pickle([("w", tensor_pickle("0", 4, 0, (4,), (1,)))])
    write_torch_zip(
        OUT / "big_endian.pt", valid, [("0", floats(1, 2, 3, 4))], byteorder=b"big"
    )
    write_torch_zip(
        OUT / "no_data_pkl.pt", valid, [("0", floats(1, 2, 3, 4))], with_data_pkl=False
    )
    write_torch_zip(
        OUT / "compressed.pt",
        valid,
        [("0", floats(1, 2, 3, 4))],
        compression=zipfile.ZIP_DEFLATED,
    )

    whole = (OUT / "state_dict.pt").read_bytes()
    (OUT / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    write_legacy(OUT / "legacy.pt", {"w": torch.randn(3, generator=generator)})
    rng = random.Random(SEED)
    (OUT / "random.bin").write_bytes(bytes(rng.randrange(256) for _ in range(512)))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(SEED)
    write_valid_fixtures(generator)
    write_rejected_fixtures(generator)
    total = sum(path.stat().st_size for path in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files ({total} bytes) to {OUT}")


if __name__ == "__main__":
    main()
