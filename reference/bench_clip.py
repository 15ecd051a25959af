"""Image and text encoding speed of transformers' `CLIPModel` on the CPU in
f32, the reference side of `cargo xtask bench clip`.

The Rust side writes a model directory (`config.json` and
`model.safetensors` of ViT-B/32 with random weights) and
`inputs.safetensors` with `pixel_values` `(batch, 3, 224, 224)`, the
preprocessed photographs, and two batches of token ids of the same
captions: `input_ids_padded`, padded to the 77-token context as
openai-clip's `clip.tokenize` pads, and `input_ids_longest`, padded to the
longest caption as transformers' CLIP processor does with `padding=True`.

This script loads the model with `CLIPModel.from_pretrained` (its default
attention, scaled dot-product attention) and, under `torch.inference_mode()`,
times `get_image_features(pixel_values)` and `get_text_features(ids)` for
both batches of ids. Each runs `--warmup` untimed times, then `--runs` timed
times. The median is reported, the upper of the two middle values for an
even count, as on the Rust side. It prints one JSON object and writes the
embeddings of the last runs to `--outputs` for the Rust side to compare.

    ~/.cache/modelzoo/venv/bin/python reference/bench_clip.py \
        --threads 2 --model-dir DIR --inputs DIR/inputs.safetensors \
        --outputs DIR/outputs.safetensors --runs 5 --warmup 1
"""

import argparse
import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPModel  # noqa: E402

from bench_args import non_negative_int, positive_int, time_pass  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, required=True)
    parser.add_argument("--model-dir", type=Path, required=True, help="CLIP model directory")
    parser.add_argument(
        "--inputs", type=Path, required=True,
        help="safetensors file with pixel_values, input_ids_padded and input_ids_longest",
    )
    parser.add_argument(
        "--outputs", type=Path, required=True, help="safetensors file to write the embeddings to"
    )
    parser.add_argument("--runs", type=positive_int, default=5, help="timed runs per pass")
    parser.add_argument(
        "--warmup", type=non_negative_int, default=1, help="untimed runs before the timed ones"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model = CLIPModel.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    inputs = load_file(args.inputs)
    pixels = inputs["pixel_values"].float()
    padded = inputs["input_ids_padded"].long()
    longest = inputs["input_ids_longest"].long()

    def image(x):
        return model.get_image_features(pixel_values=x).pooler_output

    def text(x):
        return model.get_text_features(input_ids=x).pooler_output

    with torch.inference_mode():
        image_ms, image_embeds = time_pass(image, pixels, args.warmup, args.runs)
        padded_ms, text_embeds = time_pass(text, padded, args.warmup, args.runs)
        longest_ms, text_embeds_longest = time_pass(text, longest, args.warmup, args.runs)

    save_file(
        {
            "image_embeds": image_embeds.contiguous(),
            "text_embeds": text_embeds.contiguous(),
            "text_embeds_longest": text_embeds_longest.contiguous(),
        },
        args.outputs,
    )
    result = {
        "implementation": (
            f"transformers {transformers.__version__} CLIPModel "
            f"({model.config._attn_implementation} attention), torch {torch.__version__}"
        ),
        "threads": torch.get_num_threads(),
        "runs": args.runs,
        "warmup_runs": args.warmup,
        "image_ms": image_ms,
        "text_padded_ms": padded_ms,
        "text_longest_ms": longest_ms,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
