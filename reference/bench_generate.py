"""Prefill and decode speed of transformers on SmolLM2-135M-Instruct, loaded
from the same GGUF file as the Rust model (dequantized to f32, on the CPU;
see `smollm2.load_for_benchmark`).

`cargo xtask bench generate` runs this beside the Rust implementation, with
the same prompt ids, number of new tokens and threads, and prints the ratios.
Prints one JSON object.

    ~/.cache/modelzoo/venv/bin/python reference/bench_generate.py \
        --threads 2 --dtype f32 --new-tokens 64 --runs 3 --prompt-ids 1,2,3
"""

import argparse
import json
import time

import torch

from smollm2 import load_for_benchmark


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    parser.add_argument("--new-tokens", type=int, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, _ = load_for_benchmark()
    model = model.to({"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype])
    prompt = torch.tensor([[int(t) for t in args.prompt_ids.split(",")]])
    mask = torch.ones_like(prompt)
    generate = dict(
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        pad_token_id=0,
    )
    with torch.inference_mode():
        model.generate(prompt, **dict(generate, max_new_tokens=4, min_new_tokens=4))  # warm-up
        prefill, total = [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            # generate() projects only the last position onto the vocabulary.
            model(prompt, attention_mask=mask, use_cache=True, logits_to_keep=1)
            prefill.append(time.perf_counter() - start)
            start = time.perf_counter()
            out = model.generate(prompt, **generate)
            total.append(time.perf_counter() - start)
            assert out.shape[1] == prompt.shape[1] + args.new_tokens
    prefill_s = sorted(prefill)[len(prefill) // 2]
    total_s = sorted(total)[len(total) // 2]
    # generate() runs the prompt once, then one step per further token.
    decode_s = max(total_s - prefill_s, 1e-9)
    print(
        json.dumps(
            {
                "implementation": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}",
                "threads": torch.get_num_threads(),
                "dtype": args.dtype,
                "prompt_tokens": prompt.shape[1],
                "new_tokens": args.new_tokens,
                "prefill_tokens_per_second": prompt.shape[1] / prefill_s,
                "decode_tokens_per_second": (args.new_tokens - 1) / decode_s,
            }
        )
    )


if __name__ == "__main__":
    main()
