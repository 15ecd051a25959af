"""Write the parity fixtures of the `dvae` crate.

OpenAI's `dall_e` package builds the encoder and decoder. Its validators
require at least 64 hidden channels and 512 codes, so they are switched off
to keep the fixtures small: 8 hidden channels and 32 codes. Each group has 2
blocks, so that both kinds of shortcut (identity and 1x1 convolution) appear.
The weights are the package's own initialisation with seeded, non-zero
biases. The script writes these files under dvae/tests/fixtures/:

- encoder.pkl, decoder.pkl: the modules as `torch.save` writes them, the form
  in which OpenAI publishes its weights.
- encoder.safetensors, decoder.safetensors: their state dicts.
- io.safetensors: a batch of images mapped to (eps, 1 - eps), with the
  encoder's logits and their argmax codes. It also contains a soft code
  distribution with the decoder's output for it, and the one-hot codes of the
  argmax with the decoder's output for them.
- config.json: the shape, with the field names of the crate's `Config`.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/dvae_tiny.py
"""

import json
from pathlib import Path

import attr
import torch
import torch.nn.functional as F
from dall_e import Decoder, Encoder, map_pixels
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "dvae" / "tests" / "fixtures"
CONFIG = {
    "group_count": 4,
    "n_hid": 8,
    "n_blk_per_group": 2,
    "input_channels": 3,
    "output_channels": 3,
    "vocab_size": 32,
    "n_init": 8,
}


def seeded_biases(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith(".b"):
                param.normal_(std=0.1)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with attr.validators.disabled():
        encoder = Encoder(
            n_hid=CONFIG["n_hid"],
            n_blk_per_group=CONFIG["n_blk_per_group"],
            input_channels=CONFIG["input_channels"],
            vocab_size=CONFIG["vocab_size"],
        )
        decoder = Decoder(
            n_init=CONFIG["n_init"],
            n_hid=CONFIG["n_hid"],
            n_blk_per_group=CONFIG["n_blk_per_group"],
            output_channels=CONFIG["output_channels"],
            vocab_size=CONFIG["vocab_size"],
        )
    seeded_biases(encoder)
    seeded_biases(decoder)
    encoder.eval()
    decoder.eval()

    images = map_pixels(torch.rand(2, 3, 24, 16))
    with torch.no_grad():
        logits = encoder(images)
        soft = torch.softmax(torch.randn_like(logits) * 2, dim=1)
        soft_out = decoder(soft)
        one_hot = F.one_hot(logits.argmax(dim=1), CONFIG["vocab_size"])
        one_hot = one_hot.permute(0, 3, 1, 2).float().contiguous()
        hard_out = decoder(one_hot)

    torch.save(encoder, OUT / "encoder.pkl")
    torch.save(decoder, OUT / "decoder.pkl")
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, OUT / "encoder.safetensors")
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, OUT / "decoder.safetensors")
    save_file(
        {
            "images": images,
            "logits": logits,
            "soft_codes": soft,
            "soft_output": soft_out,
            "one_hot_codes": one_hot,
            "hard_output": hard_out,
            "codes": logits.argmax(dim=1),
        },
        OUT / "io.safetensors",
    )
    (OUT / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
