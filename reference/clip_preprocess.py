"""Writes the image preprocessing fixtures of the `clip` crate.

The reference is openai-clip==1.0.1's `clip.clip._transform(n_px)`:
torchvision 0.28's `Resize(n_px, interpolation=BICUBIC)` (Pillow 13's
`Image.resize` with `Image.BICUBIC`), `CenterCrop(n_px)`, `convert("RGB")`,
`ToTensor()` and `Normalize` with CLIP's mean and standard deviation.

The inputs are photographs of scikit-image's `skimage/data` (RGB PNG,
greyscale PNG, RGBA PNG, JPEG, a palette GIF, a wide page scan), which the
Rust tests read from the installed package. Small files that this script
makes with a fixed seed cover the cases the photographs lack. They are
palette PNGs with and without transparency, grey with alpha, 16-bit grey,
RGB and RGBA, 1-bit, and RGB with a transparent colour key. The others are
a 1 x 300 column, a 20 x 30 image to upscale and a 1 x 16000 column, whose
resized image (224 x 3584000) the Rust side must crop without computing it
in full. Most cases use an `n_px` below CLIP's 224, because each output
costs 3 * n_px**2 bytes of fixture.

Writes, under clip/tests/fixtures/preprocess/:

- inputs/*.png: the made files.
- cases.json: one entry per case: {"name", "file", "photo" (whether `file`
  is in skimage/data), "image_size", "mode" (Pillow's mode of the opened
  file)}.
- pixels.safetensors: for each case, the uint8 (n_px, n_px, 3) image after
  Resize, CenterCrop and convert("RGB").
- normalized.safetensors: for two cases, the float32 (3, n_px, n_px) output
  of the whole transform.

It also prints the Pillow results of small resizes that the unit tests in
common/src/image.rs contain as literals.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/clip_preprocess.py
"""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL
import skimage
import torch
from clip.clip import _transform
from PIL import Image
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parent.parent / "clip" / "tests" / "fixtures" / "preprocess"
PHOTOS = Path(skimage.__file__).resolve().parent / "data"

# (name, file, whether the file is a photograph, n_px)
CASES = [
    ("astronaut", "astronaut.png", True, 224),
    ("camera", "camera.png", True, 96),
    ("logo", "logo.png", True, 96),
    ("chelsea", "chelsea.png", True, 96),
    ("coffee", "coffee.png", True, 96),
    ("horse", "horse.png", True, 64),
    ("page", "page.png", True, 64),
    ("rocket", "rocket.jpg", True, 96),
    ("retina", "retina.jpg", True, 64),
    ("gif", "no_time_for_that_tiny.gif", True, 32),
    ("palette", "palette.png", False, 48),
    ("palette_transparency", "palette_transparency.png", False, 48),
    ("gray_alpha", "gray_alpha.png", False, 48),
    ("gray16", "gray16.png", False, 48),
    ("rgb16", "rgb16.png", False, 48),
    ("rgba16", "rgba16.png", False, 48),
    ("bilevel", "bilevel.png", False, 48),
    ("rgb_transparency", "rgb_transparency.png", False, 48),
    ("column", "column_1x300.png", False, 64),
    ("upscale", "small_20x30.png", False, 96),
    ("column_16000", "column_1x16000.png", False, 224),
]
NORMALIZED = ["gif", "gray_alpha"]


def write_png(path: Path, pixels: np.ndarray, color_type: int) -> None:
    """Writes 16-bit samples as a PNG, which Pillow cannot do for colour."""
    height, width = pixels.shape[:2]
    rows = pixels.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def from_array(array: np.ndarray, mode: str) -> Image.Image:
    return Image.frombytes(mode, array.shape[1::-1], array.tobytes())


def palette_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    image = from_array(rng.integers(0, 16, size[::-1], dtype=np.uint8), "L")
    image = image.convert("P")
    image.putpalette(rng.integers(0, 256, 16 * 3, dtype=np.uint8).tobytes())
    return image


def make_inputs(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    palette_image(rng, (40, 30)).save(directory / "palette.png")
    palette_image(rng, (37, 29)).save(directory / "palette_transparency.png", transparency=3)

    gray_alpha = rng.integers(0, 256, (28, 36, 2), dtype=np.uint8)
    gray_alpha[:4, :, 1] = 0
    gray_alpha[-4:, :, 1] = 255
    from_array(gray_alpha, "LA").save(directory / "gray_alpha.png")

    # Pillow's convert("RGB") clips 16-bit grey to 255, so most values
    # stay below it for the output to show the image.
    gray16 = rng.integers(0, 400, (30, 35), dtype=np.uint16)
    from_array(gray16.astype("<u2"), "I;16").save(directory / "gray16.png")
    write_png(directory / "rgb16.png", rng.integers(0, 65536, (31, 26, 3)), color_type=2)
    write_png(directory / "rgba16.png", rng.integers(0, 65536, (27, 33, 4)), color_type=6)

    bilevel = rng.integers(0, 2, (33, 45), dtype=np.uint8) * 255
    from_array(bilevel, "L").convert("1").save(directory / "bilevel.png")

    rgb = rng.integers(0, 4, (26, 30, 3), dtype=np.uint8) * 85
    from_array(rgb, "RGB").save(directory / "rgb_transparency.png", transparency=(85, 0, 170))

    column = rng.integers(0, 256, (300, 1, 3), dtype=np.uint8)
    from_array(column, "RGB").save(directory / "column_1x300.png")
    small = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    from_array(small, "RGB").save(directory / "small_20x30.png")

    # A random walk, so that the file stays small.
    steps = rng.integers(-6, 7, 16000)
    walk = (np.cumsum(steps) % 256).astype(np.uint8).reshape(16000, 1)
    from_array(walk, "L").save(directory / "column_1x16000.png")


def crop_pixels(image: Image.Image, n_px: int) -> np.ndarray:
    """Runs the transform up to its ToTensor step."""
    resize, center_crop, to_rgb = _transform(n_px).transforms[:3]
    return np.asarray(to_rgb(center_crop(resize(image))), dtype=np.uint8)


def rust_array(name: str, values: np.ndarray) -> str:
    flat = ", ".join(str(int(v)) for v in values.ravel())
    return f"// {name}: shape {list(values.shape)}\n[{flat}]"


def print_resample_cases() -> None:
    """Prints small resizes for the unit tests of common/src/image.rs."""
    rng = np.random.default_rng(1)

    def case(label, mode, array, size, resample=Image.BICUBIC, crop=None):
        result = from_array(array, mode).resize(size, resample)
        if crop is not None:
            result = result.crop(crop)
        print(rust_array(f"{label} input", array))
        print(rust_array(f"{label} output {size} crop {crop}", np.asarray(result)))

    print(f"Pillow {PIL.__version__}")
    case("gray downscale", "L", rng.integers(0, 256, (4, 5), dtype=np.uint8), (3, 2))
    case("gray upscale", "L", rng.integers(0, 256, (2, 3), dtype=np.uint8), (7, 5))
    case("rgb", "RGB", rng.integers(0, 256, (3, 6, 3), dtype=np.uint8), (4, 5))
    # "La" and "CMYK" are resized channel by channel with no premultiplying,
    # so they check 2 and 4 channels.
    case("two channels", "La", rng.integers(0, 256, (5, 5, 2), dtype=np.uint8), (3, 4))
    case("four channels", "CMYK", rng.integers(0, 256, (4, 4, 4), dtype=np.uint8), (6, 3))
    # The height shrinks by more than twice the width, so Pillow filters
    # vertically first.
    case("vertical first", "L", rng.integers(0, 256, (20, 4), dtype=np.uint8), (3, 5))
    case("window", "L", rng.integers(0, 256, (7, 9), dtype=np.uint8), (12, 10), crop=(3, 2, 8, 6))
    case("16-bit", "I;16", rng.integers(0, 65536, (4, 5)).astype("<u2"), (3, 7))
    case("nearest", "L", rng.integers(0, 256, (5, 7), dtype=np.uint8), (3, 4), Image.NEAREST)
    case("nearest up", "L", rng.integers(0, 256, (2, 3), dtype=np.uint8), (8, 5), Image.NEAREST)


def main() -> None:
    make_inputs(OUT / "inputs")
    cases, pixels, normalized = [], {}, {}
    for name, file, photo, n_px in CASES:
        path = PHOTOS / file if photo else OUT / "inputs" / file
        with Image.open(path) as image:
            mode = image.mode
            pixels[name] = crop_pixels(image, n_px)
            tensor = _transform(n_px)(image)
        # The last two steps are ToTensor and Normalize of these pixels.
        to_tensor, normalize = _transform(n_px).transforms[3:]
        expected = normalize(to_tensor(from_array(pixels[name], "RGB")))
        assert torch.equal(tensor, expected), name
        if name in NORMALIZED:
            normalized[name] = tensor.numpy()
        cases.append(
            {"name": name, "file": file, "photo": photo, "image_size": n_px, "mode": mode}
        )
        print(f"{name}: {file} ({mode}) -> {n_px} x {n_px}")

    save_file(pixels, str(OUT / "pixels.safetensors"))
    save_file(normalized, str(OUT / "normalized.safetensors"))
    (OUT / "cases.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")
    print(f"wrote {OUT}")
    print_resample_cases()


if __name__ == "__main__":
    main()
