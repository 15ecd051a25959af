"""Forward-pass speed of OpenAI's DALL-E dVAE encoder and decoder (the
`dall_e` package, PyPI `DALL-E==0.1`) on the CPU in f32, the reference side
of `cargo xtask bench dvae`.

The Rust side writes three files into one directory. `encoder.safetensors`
and `decoder.safetensors` are the state dicts of the OpenAI configuration
(4 groups, `n_hid` 256, 2 blocks per group, 3 channels, 8192 codes, `n_init`
128). `inputs.safetensors` contains `images`, a batch of mapped pixels
`(batch, 3, 256, 256)`, and `codes`, a grid of code indices
`(batch, 32, 32)`. This script loads the weights into `dall_e.Encoder()` and
`dall_e.Decoder()` built with their default arguments. On the CPU, their
convolutions run in float32, because `dall_e` switches to float16 only on
CUDA.

Under `torch.no_grad()`, it times `encoder(images)`, then `decoder(one_hot)`,
where `one_hot` is `F.one_hot(codes, 8192).permute(0, 3, 1, 2).float()`.
That tensor has the memory layout that `dvae::one_hot_codes` gives on the
Rust side (channels last), so both decoders run the same kernels. Each pass
runs `--warmup` untimed times, then `--runs` timed times, and the median is
reported (the upper of the two middle values for an even count, as on the
Rust side). The script prints one JSON object. It writes the outputs of the
last run to `--outputs`, for the Rust side to compare: `codes` (the argmax
of the encoder's logits), `stats` (the decoder's output) and `logits`. To
keep the file small, `logits` contains the first image's logits only.

    ~/.cache/modelzoo/venv/bin/python reference/bench_dvae.py \
        --threads 2 --model-dir DIR --inputs DIR/inputs.safetensors \
        --outputs DIR/outputs.safetensors --runs 5 --warmup 1
"""

import argparse
import json
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from dall_e import Decoder, Encoder
from safetensors.torch import load_file, save_file
from bench_args import non_negative_int, positive_int, time_pass


def load(module: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load the state dict in `path` into `module`, whose names it must match
    exactly, and return the module in eval mode."""
    module.load_state_dict(load_file(path), strict=True)
    return module.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, required=True)
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="directory containing encoder.safetensors and decoder.safetensors"
    )
    parser.add_argument(
        "--inputs", type=Path, required=True, help="safetensors file with `images` and `codes`"
    )
    parser.add_argument(
        "--outputs", type=Path, required=True, help="safetensors file to write the outputs to"
    )
    parser.add_argument("--runs", type=positive_int, default=5, help="timed runs per pass")
    parser.add_argument(
        "--warmup", type=non_negative_int, default=1, help="untimed runs before the timed ones"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    encoder = load(Encoder(), args.model_dir / "encoder.safetensors")
    decoder = load(Decoder(), args.model_dir / "decoder.safetensors")
    inputs = load_file(args.inputs)
    images = inputs["images"].float()
    one_hot = F.one_hot(inputs["codes"].long(), decoder.vocab_size).permute(0, 3, 1, 2).float()

    with torch.no_grad():
        encoder_ms, logits = time_pass(encoder, images, args.warmup, args.runs)
        decoder_ms, stats = time_pass(decoder, one_hot, args.warmup, args.runs)

    save_file(
        {
            "codes": logits.argmax(dim=1).contiguous(),
            "logits": logits[:1].contiguous(),
            "stats": stats.contiguous(),
        },
        args.outputs,
    )
    batch = images.shape[0]
    result = {
        "implementation": (
            f"dall_e {metadata.version('DALL-E')} Encoder and Decoder, torch {torch.__version__}"
        ),
        "threads": torch.get_num_threads(),
        "batch_size": batch,
        "image_size": images.shape[-1],
        "runs": args.runs,
        "warmup_runs": args.warmup,
        "encoder_ms": encoder_ms,
        "decoder_ms": decoder_ms,
        "encoder_images_per_second": 1000 * batch / encoder_ms,
        "decoder_images_per_second": 1000 * batch / decoder_ms,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
