"""Training-step and decode speed of transformers' `GPT2LMHeadModel` on the
CPU in f32, the reference side of `cargo xtask bench train-gpt` and
`cargo xtask bench decode-gpt`.

`train` times full AdamW steps of a 6-layer GPT-2 of width 384 (6 heads,
256 positions, dropout 0). A step zeroes the gradients, runs the model on a
fixed batch of random tokens and takes the cross-entropy of each position
against the next token. It then back-propagates, clips the gradient norm to
1 and steps `torch.optim.AdamW` (lr 3e-4, betas (0.9, 0.99), eps 1e-8,
weight decay 0.1 on the 2-D weights only, `foreach` left at its default).
After `--warmup` untimed steps it reports the median time of `--steps` timed
steps and the loss of every step.

`decode` decodes greedily with the KV cache from the prompt ids, in a plain
loop over `model(...)` calls, and reports the median decode tokens per
second after the first token and the tokens of the first run.

Both load the weights the Rust side writes into `--model-dir`, with
`attn_implementation="sdpa"`. Without `--model-dir`, `train` builds the
model from its configuration with seed 0 and draws its own batch, so this
file also runs on its own. Prints one JSON object.

    ~/.cache/modelzoo/venv/bin/python reference/bench_gpt.py train \
        --threads 2 --steps 10
    ~/.cache/modelzoo/venv/bin/python reference/bench_gpt.py decode \
        --threads 2 --model-dir DIR --prompt-ids 1,2,3 --new-tokens 64 --runs 3
"""

import argparse
import json
import os
import statistics
import time

# Every model comes from a local directory or a config. Offline mode makes
# any hub request fail.
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402
from bench_args import non_negative_int, positive_int

ATTENTION = "sdpa"
# The training model: GPT-2's layout at 6 layers of width 384, no dropout.
TRAIN_CONFIG = dict(
    n_embd=384,
    n_layer=6,
    n_head=6,
    n_positions=256,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
)
LEARNING_RATE = 3e-4
BETAS = (0.9, 0.99)
EPS = 1e-8
WEIGHT_DECAY = 0.1
MAX_GRAD_NORM = 1.0


def load_model(model_dir: str) -> GPT2LMHeadModel:
    model = GPT2LMHeadModel.from_pretrained(
        model_dir, attn_implementation=ATTENTION, dtype=torch.float32
    )
    return model


def implementation(model: GPT2LMHeadModel) -> str:
    return (
        f"transformers {transformers.__version__} GPT2LMHeadModel "
        f"(attention {model.config._attn_implementation}), torch {torch.__version__}"
    )


def train_model(args: argparse.Namespace) -> tuple[GPT2LMHeadModel, torch.Tensor]:
    """Returns the model and the `(batch, context + 1)` token batch."""
    if args.model_dir:
        model = load_model(args.model_dir)
        found = {key: getattr(model.config, key) for key in TRAIN_CONFIG}
        if found != TRAIN_CONFIG:
            raise SystemExit(f"{args.model_dir}: expected {TRAIN_CONFIG}, found {found}")
    else:
        torch.manual_seed(0)
        last_id = args.vocab_size - 1
        config = GPT2Config(
            vocab_size=args.vocab_size, bos_token_id=last_id, eos_token_id=last_id, **TRAIN_CONFIG
        )
        model = GPT2LMHeadModel._from_config(config, attn_implementation=ATTENTION)
    if args.inputs:
        batch = load_file(args.inputs)["input_ids"].to(torch.int64)
    else:
        context = model.config.n_positions
        batch = torch.randint(model.config.vocab_size, (args.batch_size, context + 1))
    return model, batch


def train(args: argparse.Namespace) -> dict:
    model, batch = train_model(args)
    model.train()
    inputs = batch[:, :-1].contiguous()
    targets = batch[:, 1:].reshape(-1)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=LEARNING_RATE,
        betas=BETAS,
        eps=EPS,
    )
    params = list(model.parameters())

    def step() -> float:
        optimizer.zero_grad()
        logits = model(input_ids=inputs, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        return loss.item()

    losses, seconds = [], []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        losses.append(step())
        if i >= args.warmup:
            seconds.append(time.perf_counter() - start)
    step_s = statistics.median(seconds)
    tokens = inputs.numel()
    return {
        "implementation": implementation(model),
        "optimizer": "torch.optim.AdamW, foreach and fused left at their defaults",
        "threads": torch.get_num_threads(),
        "batch_size": inputs.shape[0],
        "context": inputs.shape[1],
        "vocab_size": model.config.vocab_size,
        "parameters": sum(p.numel() for p in params),
        "steps": args.steps,
        "step_ms": 1000 * step_s,
        "tokens_per_second": tokens / step_s,
        "losses": losses,
    }


@torch.inference_mode()
def greedy(model: GPT2LMHeadModel, prompt: torch.Tensor, new_tokens: int):
    """Returns the tokens, the prefill time and the decode time in seconds."""
    start = time.perf_counter()
    out = model(prompt, use_cache=True, logits_to_keep=1)
    token = out.logits[0, -1].argmax()
    tokens = [int(token)]
    first = time.perf_counter()
    for _ in range(new_tokens - 1):
        out = model(token.view(1, 1), cache=out.cache, use_cache=True)
        token = out.logits[0, -1].argmax()
        tokens.append(int(token))
    return tokens, first - start, time.perf_counter() - first


def decode(args: argparse.Namespace) -> dict:
    if args.new_tokens < 2:
        raise SystemExit(f"--new-tokens {args.new_tokens} is invalid: use 2 or more")
    model = load_model(args.model_dir).eval()
    prompt = torch.tensor([[int(t) for t in args.prompt_ids.split(",")]])
    greedy(model, prompt, args.new_tokens)  # warm-up, as long as a timed run
    runs = [greedy(model, prompt, args.new_tokens) for _ in range(args.runs)]
    if any(tokens != runs[0][0] for tokens, _, _ in runs):
        raise SystemExit("greedy decoding gave different tokens in different runs")
    prefill_s = statistics.median(r[1] for r in runs)
    decode_s = statistics.median(r[2] for r in runs)
    return {
        "implementation": implementation(model),
        "threads": torch.get_num_threads(),
        "prompt_tokens": prompt.shape[1],
        "new_tokens": args.new_tokens,
        "prefill_tokens_per_second": prompt.shape[1] / prefill_s,
        "decode_tokens_per_second": (args.new_tokens - 1) / decode_s,
        "tokens": runs[0][0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train_args = commands.add_parser("train", help="time AdamW training steps")
    train_args.add_argument("--threads", type=positive_int, required=True)
    train_args.add_argument("--steps", type=positive_int, default=10, help="timed steps")
    train_args.add_argument(
        "--warmup", type=non_negative_int, default=2, help="untimed steps before the timed ones"
    )
    train_args.add_argument("--batch-size", type=positive_int, default=8)
    train_args.add_argument("--vocab-size", type=positive_int, default=50257)
    train_args.add_argument("--model-dir", help="weights to load (default: seed 0)")
    train_args.add_argument(
        "--inputs", help="safetensors file with `input_ids` (batch, context + 1)"
    )
    decode_args = commands.add_parser("decode", help="time greedy decoding")
    decode_args.add_argument("--threads", type=positive_int, required=True)
    decode_args.add_argument("--model-dir", required=True)
    decode_args.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
    decode_args.add_argument("--new-tokens", type=positive_int, default=64)
    decode_args.add_argument("--runs", type=positive_int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    result = train(args) if args.command == "train" else decode(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
