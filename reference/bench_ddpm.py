"""U-Net forward-pass and DDIM sampling speed of diffusers' `UNet2DModel` and
`DDIMScheduler` in the configuration of google/ddpm-cifar10-32, on the CPU
in f32, the reference side of `cargo xtask bench ddpm`.

The Rust side writes the layout of a diffusers pipeline directory into
`--model-dir`. `unet/` contains `config.json` and
`diffusion_pytorch_model.safetensors`, the U-Net with random weights.
`scheduler/scheduler_config.json` is the DDIMScheduler configuration. It
has the DDPM schedule of 1000 linear betas from 1e-4 to 0.02, and
DDIMScheduler's defaults otherwise. So x_0 is clipped to [-1, 1], the model
predicts epsilon, the timesteps use "leading" spacing, and the last step,
which goes past timestep 0, uses an alpha_prod of 1 (`set_alpha_to_one`).
`inputs.safetensors` contains `sample` `(1, 3, 32, 32)` and `timesteps`
`(1,)` for the forward pass, and `noise` `(1, 3, 32, 32)`, the initial noise
of the sampler.

This script loads the U-Net with `UNet2DModel.from_pretrained` (its default
attention processor, scaled dot-product attention) and the scheduler with
`DDIMScheduler.from_pretrained`. Under `torch.no_grad()` it times two
passes:

- forward: `unet(sample, timesteps).sample`;
- DDIM sampling: the loop of diffusers' `DDIMPipeline` from `noise`, with
  eta 0 and no progress bar: for each of the `--steps` timesteps,
  `unet(x, t).sample`, then `scheduler.step(output, t, x, eta=0.0)`. The
  scheduler's `set_timesteps` runs once before the timed runs, because DDIM
  steps do not change the scheduler's state. Like the Rust side, the timed
  loop leaves out the pipeline's mapping of the sample to [0, 1].

Each pass runs `--warmup` untimed times, then `--runs` timed times. The
median is reported, the upper of the two middle values for an even count,
as on the Rust side. The script prints one JSON object and writes the
outputs of the last runs to `--outputs` for the Rust side to compare:
`unet_output` and `ddim_sample`, the final sample in [-1, 1].

    ~/.cache/modelzoo/venv/bin/python reference/bench_ddpm.py \
        --threads 2 --model-dir DIR --inputs DIR/inputs.safetensors \
        --outputs DIR/outputs.safetensors --runs 3 --warmup 1 --steps 50
"""

import argparse
import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import diffusers  # noqa: E402
import torch  # noqa: E402
from diffusers import DDIMScheduler, UNet2DModel  # noqa: E402
from diffusers.models.attention_processor import Attention  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from bench_args import non_negative_int, positive_int, time_pass  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, required=True)
    parser.add_argument(
        "--model-dir", type=Path, required=True,
        help="directory containing unet/ and scheduler/scheduler_config.json",
    )
    parser.add_argument(
        "--inputs", type=Path, required=True,
        help="safetensors file with sample, timesteps and noise",
    )
    parser.add_argument(
        "--outputs", type=Path, required=True, help="safetensors file to write the outputs to"
    )
    parser.add_argument("--runs", type=positive_int, default=3, help="timed runs per pass")
    parser.add_argument(
        "--warmup", type=non_negative_int, default=1, help="untimed runs before the timed ones"
    )
    parser.add_argument(
        "--steps", type=positive_int, default=50, help="DDIM steps of the sampling pass"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    unet = UNet2DModel.from_pretrained(args.model_dir, subfolder="unet").eval()
    if unet.dtype != torch.float32:
        raise SystemExit(f"the U-Net in {args.model_dir} loaded as {unet.dtype}, not float32")
    scheduler = DDIMScheduler.from_pretrained(args.model_dir, subfolder="scheduler")
    scheduler.set_timesteps(args.steps)
    inputs = load_file(args.inputs)
    sample = inputs["sample"].float()
    timesteps = inputs["timesteps"].long()
    noise = inputs["noise"].float()

    def forward(x):
        return unet(x, timesteps).sample

    def ddim_sample(x):
        for t in scheduler.timesteps:
            output = unet(x, t).sample
            x = scheduler.step(output, t, x, eta=0.0).prev_sample
        return x

    with torch.no_grad():
        forward_ms, unet_output = time_pass(forward, sample, args.warmup, args.runs)
        sample_ms, final_sample = time_pass(ddim_sample, noise, args.warmup, args.runs)

    save_file(
        {"unet_output": unet_output.contiguous(), "ddim_sample": final_sample.contiguous()},
        args.outputs,
    )
    processors = sorted(
        {type(m.processor).__name__ for m in unet.modules() if isinstance(m, Attention)}
    )
    result = {
        "implementation": (
            f"diffusers {diffusers.__version__} UNet2DModel ({', '.join(processors)}) "
            f"and DDIMScheduler, torch {torch.__version__}"
        ),
        "threads": torch.get_num_threads(),
        "runs": args.runs,
        "warmup_runs": args.warmup,
        "steps": len(scheduler.timesteps),
        "parameters": sum(p.numel() for p in unet.parameters()),
        "forward_ms": forward_ms,
        "sample_ms": sample_ms,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
