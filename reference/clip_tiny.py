"""Writes the parity fixtures of the `clip` crate.

A seeded tiny `CLIPModel` from transformers, saved under
clip/tests/fixtures/tiny/ with `save_pretrained` (config.json and
model.safetensors), and tiny_io.safetensors with inputs and the outputs
transformers computes for them in float32:

- text: 4 sequences of 12 ids. The end-of-text id is 998, not the largest id
  of the vocabulary, and two sequences hold the larger id 999 (an added token)
  before it, so pooling at the largest id would read the wrong position. After
  the end-of-text token come padding ids, which the causal mask keeps out of
  the pooled feature.
- images: 3 random images of 3 x 24 x 24, with patches of 8 x 8.

Outputs: the projected text and image embeddings (`text_embeds`,
`image_embeds`, before normalisation), the pooled features before the
projections, the text encoder's last hidden state, and the logits per image
and per text. Weights are drawn away from their initial values (LayerNorm
gains and biases included) so that every tensor matters.

preset_parameters.json stores the parameter counts of the ViT-B/32, ViT-B/16
and ViT-L/14 configurations, built on the meta device.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/clip_tiny.py
"""

import json
import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPConfig, CLIPModel  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "clip" / "tests" / "fixtures"
VOCAB = 1000
END_OF_TEXT = 998
START_OF_TEXT = 997
ADDED_TOKEN = 999


def tiny_config() -> CLIPConfig:
    text = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=START_OF_TEXT,
        eos_token_id=END_OF_TEXT,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=24,
        patch_size=8,
        num_channels=3,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    )
    return CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=16, logit_scale_init_value=2.3
    )


def text_inputs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, START_OF_TEXT, (4, 12), generator=generator)
    ids[:, 0] = START_OF_TEXT
    for row, end in enumerate([11, 5, 3, 8]):
        ids[row, end] = END_OF_TEXT
        ids[row, end + 1 :] = 0
    # Added tokens with ids above the end-of-text id.
    ids[1, 2] = ADDED_TOKEN
    ids[3, 6] = ADDED_TOKEN
    return ids


def preset_parameters() -> dict:
    presets = {
        "vit_b_32": dict(
            text=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8),
            vision=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                        patch_size=32, image_size=224),
            projection_dim=512,
        ),
        "vit_b_16": dict(
            text=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8),
            vision=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                        patch_size=16, image_size=224),
            projection_dim=512,
        ),
        "vit_l_14": dict(
            text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
            vision=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                        num_hidden_layers=24, patch_size=14, image_size=224),
            projection_dim=768,
        ),
    }
    counts = {}
    for name, p in presets.items():
        config = CLIPConfig(
            text_config=p["text"], vision_config=p["vision"], projection_dim=p["projection_dim"]
        )
        with torch.device("meta"):
            model = CLIPModel(config)
        counts[name] = sum(t.numel() for t in model.parameters())
    return counts


def main() -> None:
    torch.manual_seed(0)
    model = CLIPModel(tiny_config()).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "logit_scale":
                continue
            param.add_(torch.randn_like(param) * 0.1)

    tiny = OUT / "tiny"
    shutil.rmtree(tiny, ignore_errors=True)
    model.save_pretrained(tiny, safe_serialization=True)

    input_ids = text_inputs()
    pixel_values = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values)
        text_output = model.text_model(input_ids=input_ids)
        text_pooled = text_output.pooler_output
        image_pooled = model.vision_model(pixel_values=pixel_values).pooler_output
        assert torch.equal(out.text_model_output.pooler_output, model.text_projection(text_pooled))
        tensors = {
            "input_ids": input_ids,
            "pixel_values": pixel_values,
            "text_last_hidden": text_output.last_hidden_state,
            "text_pooled": text_pooled,
            "image_pooled": image_pooled,
            "text_embeds": out.text_model_output.pooler_output,
            "image_embeds": out.vision_model_output.pooler_output,
            "logits_per_image": out.logits_per_image,
            "logits_per_text": out.logits_per_text,
            "loss": model(input_ids=input_ids[:3], pixel_values=pixel_values,
                          return_loss=True).loss.reshape(1),
        }
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / "tiny_io.safetensors")

    with open(OUT / "preset_parameters.json", "w") as f:
        json.dump(preset_parameters(), f, indent=2)
        f.write("\n")
    print(f"wrote {tiny}, tiny_io.safetensors and preset_parameters.json in {OUT}")


if __name__ == "__main__":
    main()
