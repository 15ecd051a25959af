"""Write the U-Net parity fixtures of the `diffusion` crate.

diffusers' `UNet2DModel` builds three small seeded U-Nets that between them
cover what the Rust model implements:

- ddpm: the layout of google/ddpm-cifar10-32 at a sixteenth of the width.
  Plain and attention blocks, one attention head per layer, padding 0
  before the stride-2 convolutions, sines before cosines with frequency
  shift 1, GroupNorm epsilon 1e-6.
- multihead: attention heads of 8 channels (2 and 3 heads), the scale-shift
  time conditioning (so the mid attention has no GroupNorm), a class table,
  a wider time embedding, a mid-block scale factor, a non-square sample,
  one input and two output channels.
- learned: a learned time table instead of the sinusoidal embedding, no mid
  block, centred inputs and dropout (inactive at evaluation).

Every parameter is perturbed with seeded noise, so that GroupNorm weights
and biases are not left at 1 and 0 and a swapped tensor cannot pass. Each
model is written with `save_pretrained` to diffusion/tests/fixtures/unet_NAME/
(config.json and diffusion_pytorch_model.safetensors) with io.safetensors:
inputs, timesteps, class labels where used, and the output.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/ddpm_unet_tiny.py
"""

from pathlib import Path

import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "diffusion" / "tests" / "fixtures"

CASES = {
    "ddpm": dict(
        config=dict(
            sample_size=16,
            in_channels=3,
            out_channels=3,
            block_out_channels=[16, 32, 32],
            down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            layers_per_block=2,
            attention_head_dim=None,
            downsample_padding=0,
            flip_sin_to_cos=False,
            freq_shift=1,
            norm_eps=1e-6,
            norm_num_groups=8,
        ),
        sample=(2, 3, 16, 16),
        timesteps=[3, 999],
    ),
    "multihead": dict(
        config=dict(
            sample_size=[8, 12],
            in_channels=1,
            out_channels=2,
            block_out_channels=[16, 24],
            down_block_types=["AttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "AttnUpBlock2D"],
            layers_per_block=1,
            attention_head_dim=8,
            resnet_time_scale_shift="scale_shift",
            num_class_embeds=10,
            time_embedding_dim=40,
            mid_block_scale_factor=1.4142,
            norm_num_groups=8,
        ),
        sample=(3, 1, 8, 12),
        timesteps=[0, 17, 500],
        class_labels=[1, 9, 4],
    ),
    "learned": dict(
        config=dict(
            sample_size=8,
            in_channels=2,
            out_channels=2,
            block_out_channels=[8, 16],
            down_block_types=["DownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "UpBlock2D"],
            layers_per_block=1,
            mid_block_type=None,
            time_embedding_type="learned",
            num_train_timesteps=50,
            center_input_sample=True,
            dropout=0.1,
            norm_num_groups=4,
        ),
        sample=(2, 2, 8, 8),
        timesteps=[49, 7],
    ),
}


def main():
    for seed, (name, case) in enumerate(CASES.items()):
        torch.manual_seed(seed)
        model = UNet2DModel(**case["config"]).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        sample = torch.randn(case["sample"])
        timesteps = torch.tensor(case["timesteps"], dtype=torch.long)
        io = {"sample": sample, "timesteps": timesteps}
        labels = case.get("class_labels")
        if labels is not None:
            io["class_labels"] = torch.tensor(labels, dtype=torch.long)
        with torch.no_grad():
            io["output"] = model(sample, timesteps, class_labels=io.get("class_labels")).sample
            io["output_scalar_timestep"] = model(
                sample, int(timesteps[0]), class_labels=io.get("class_labels")
            ).sample
        directory = OUT / f"unet_{name}"
        model.save_pretrained(directory)
        save_file({k: v.contiguous() for k, v in io.items()}, directory / "io.safetensors")
        count = sum(p.numel() for p in model.parameters())
        print(f"{name}: {count} parameters, output {tuple(io['output'].shape)}")


if __name__ == "__main__":
    main()
