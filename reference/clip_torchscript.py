"""Write the fixtures of `cargo xtask convert clip-torchscript`.

OpenAI publishes CLIP as TorchScript archives with fp16 weights whose names
are those of the model code in its `clip` package (openai-clip). Their
`state_dict()` also contains three integer tensors, input_resolution,
context_length and vocab_size, which `clip.model.build_model` drops. This
script builds a tiny seeded ViT CLIP with that code and saves it the same
way. It writes these files under clip/tests/fixtures/:

- openai_tiny.pt: the TorchScript archive, traced on the CPU with the methods
  of the releases (forward, encode_image and encode_text). Its weights went
  through openai-clip's fp16 conversion, `clip.model.convert_weights`, so
  the linear, convolution and attention weights and both projections are
  fp16, and the embeddings, LayerNorms and logit_scale stay f32.
- openai_tiny_outputs.safetensors: fixed inputs and the outputs of the same
  model in f32. `pixel_values` is (2, 3, 32, 32) f32 and `input_ids` is
  (3, 16) int64 with <|startoftext|> first, the end-of-text token
  (vocab_size - 1) at positions 5, 15 and 9, and zero padding after it.
  `image_embeds` and `text_embeds` are the unnormalised outputs of
  `encode_image` and `encode_text`, and `logits_per_image` is (2, 3).
- openai_resnet_names.pt: a TorchScript module with three parameters named
  as in a ModifiedResNet image encoder (`visual.conv1.weight`,
  `visual.layer1.0.conv1.weight`, `visual.attnpool.positional_embedding`)
  and tiny shapes. The converter rejects the ResNet releases by these
  names, and a real ResNet CLIP would exceed the size budget of the
  fixtures.

The f32 reference model is the fp16-converted model cast back to f32, so its
weights equal the archive's weights exactly. A converter that keeps every
value therefore matches these outputs to f32 rounding, not fp16 rounding.

The widths are 64, the smallest that `clip.model.build_model` accepts,
because it infers the number of heads as width / 64. The image encoder has
two layers and the text encoder one. That keeps the fixtures under 500 KB
and catches a converter that mixes up layer indices or takes both layer
counts from one encoder. The weights are random, with non-zero biases,
LayerNorm weights away from 1 and logit_scale away from its initial value,
so that a tensor dropped, transposed or swapped by a converter changes the
outputs.

NOTE: the released archives were not opened here, so whether they register
input_resolution, context_length and vocab_size as parameters or as buffers
is not checked. This archive registers them as parameters.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/clip_torchscript.py
"""

import copy
import re
from pathlib import Path

import clip
import torch
from clip.model import CLIP, convert_weights
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "clip" / "tests" / "fixtures"
EMBED_DIM = 32
IMAGE_RESOLUTION = 32
VISION_LAYERS = 2
VISION_WIDTH = 64
VISION_PATCH_SIZE = 8
CONTEXT_LENGTH = 16
VOCAB_SIZE = 128
TRANSFORMER_WIDTH = 64
TRANSFORMER_HEADS = 1
TRANSFORMER_LAYERS = 1
# The CLIP vocabulary ends with <|startoftext|> and <|endoftext|>.
START_OF_TEXT = VOCAB_SIZE - 2
END_OF_TEXT = VOCAB_SIZE - 1
END_POSITIONS = (5, 15, 9)


def randomise(model: CLIP) -> None:
    """Replace every parameter with seeded random values of a sensible scale."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == "logit_scale":
                param.fill_(3.1)
            elif re.search(r"(^|\.)ln_\w+\.weight$", name):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.normal_(std=0.1)
            elif param.dim() >= 2 and not name.endswith("positional_embedding"):
                fan_in = param[0].numel()
                param.normal_(std=fan_in**-0.5)
            else:
                param.normal_(std=0.5)


def register_sizes(model: CLIP) -> None:
    """Store the three sizes as 0-d int64 tensors in the state dict."""
    sizes = {
        "input_resolution": IMAGE_RESOLUTION,
        "context_length": CONTEXT_LENGTH,
        "vocab_size": VOCAB_SIZE,
    }
    for name, value in sizes.items():
        # CLIP keeps context_length and vocab_size as int attributes, which
        # a parameter of the same name cannot replace.
        if name in model.__dict__:
            delattr(model, name)
        model.register_parameter(name, torch.nn.Parameter(torch.tensor(value), requires_grad=False))


def fixed_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    pixel_values = torch.randn(2, 3, IMAGE_RESOLUTION, IMAGE_RESOLUTION)
    input_ids = torch.zeros(len(END_POSITIONS), CONTEXT_LENGTH, dtype=torch.int64)
    for row, end in enumerate(END_POSITIONS):
        input_ids[row, 0] = START_OF_TEXT
        input_ids[row, 1:end] = torch.randint(1, START_OF_TEXT, (end - 1,))
        input_ids[row, end] = END_OF_TEXT
    return pixel_values, input_ids


class ResNetNames(torch.nn.Module):
    """Parameters named as in a ModifiedResNet image encoder, with tiny shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = torch.nn.Module()
        self.visual.conv1 = torch.nn.Conv2d(3, 4, 1, bias=False)
        block = torch.nn.Module()
        block.conv1 = torch.nn.Conv2d(4, 4, 1, bias=False)
        self.visual.layer1 = torch.nn.Sequential(block)
        self.visual.attnpool = torch.nn.Module()
        self.visual.attnpool.positional_embedding = torch.nn.Parameter(torch.randn(2, 4))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.visual.layer1[0].conv1(self.visual.conv1(image))
        return x + self.visual.attnpool.positional_embedding.sum()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = CLIP(
        EMBED_DIM,
        IMAGE_RESOLUTION,
        VISION_LAYERS,
        VISION_WIDTH,
        VISION_PATCH_SIZE,
        CONTEXT_LENGTH,
        VOCAB_SIZE,
        TRANSFORMER_WIDTH,
        TRANSFORMER_HEADS,
        TRANSFORMER_LAYERS,
    )
    randomise(model)
    convert_weights(model)
    register_sizes(model)
    model.eval()

    reference = copy.deepcopy(model).float()
    pixel_values, input_ids = fixed_inputs()
    with torch.no_grad():
        image_embeds = reference.encode_image(pixel_values)
        text_embeds = reference.encode_text(input_ids)
        logits_per_image, logits_per_text = reference(pixel_values, input_ids)
    assert torch.equal(logits_per_text, logits_per_image.t())

    archive = OUT / "openai_tiny.pt"
    # The trace check is off because ResidualAttentionBlock re-assigns its
    # causal mask in the input's dtype on each call, so the tracer stores it
    # as a constant that is f32 in the first run and fp16 in the check.
    with torch.no_grad():
        traced = torch.jit.trace_module(
            model,
            {
                "forward": (pixel_values, input_ids),
                "encode_image": (pixel_values,),
                "encode_text": (input_ids,),
            },
            check_trace=False,
        )
    traced.save(str(archive))
    save_file(
        {
            "pixel_values": pixel_values,
            "input_ids": input_ids,
            "image_embeds": image_embeds,
            "text_embeds": text_embeds,
            "logits_per_image": logits_per_image,
        },
        OUT / "openai_tiny_outputs.safetensors",
    )

    stub = ResNetNames().eval()
    with torch.no_grad():
        torch.jit.trace(stub, torch.randn(1, 3, 1, 1)).save(str(OUT / "openai_resnet_names.pt"))

    # openai-clip's own loader rebuilds the model from the archive's state
    # dict, inferring the configuration from shapes as a converter must.
    rebuilt, _ = clip.load(str(archive), device="cpu", jit=False)
    with torch.no_grad():
        assert torch.equal(rebuilt.encode_image(pixel_values), image_embeds)
        assert torch.equal(rebuilt.encode_text(input_ids), text_embeds)
    print(f"wrote the archives and outputs in {OUT}")


if __name__ == "__main__":
    main()
