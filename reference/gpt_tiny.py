"""Writes the parity fixtures of the `gpt` crate.

Seeded tiny models built from configs with transformers, saved under
gpt/tests/fixtures/ with `save_pretrained` (config.json and model.safetensors):

- openai_gpt/: `OpenAIGPTLMHeadModel` (3 layers, width 32, 4 heads, vocabulary 96);
- gpt2/: the base `GPT2Model`, so tensor names have no `transformer.` prefix,
  the layout of the `gpt2` checkpoint on the Hugging Face hub;
- gpt_neo/: `GPTNeoForCausalLM` (4 layers alternating global and local
  attention, window 4);
- openai_gpt_double_heads/ and openai_gpt_classify/: `OpenAIGPTDoubleHeadsModel`
  and `OpenAIGPTForSequenceClassification` with the body weights of openai_gpt/.

For each model `{name}_io.safetensors` stores the inputs and the outputs
transformers computes for them in float32. preset_parameters.json stores the
parameter counts of the full-size GPT-1, GPT-2 and GPT-3 shapes, built on the
meta device.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/gpt_tiny.py
"""

import json
import os
import shutil
from pathlib import Path

# Every model is built from a local config. Offline mode makes any hub request fail.
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    OpenAIGPTConfig,
    OpenAIGPTDoubleHeadsModel,
    OpenAIGPTForSequenceClassification,
    OpenAIGPTLMHeadModel,
    OpenAIGPTModel,
)
from transformers.utils import logging as hf_logging  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "gpt" / "tests" / "fixtures"
VOCAB = 96
POSITIONS = 32
WIDTH = 32
HEADS = 4
# GPT2Config and GPTNeoConfig default BOS and EOS to 50256, the last id of the
# 50257-token vocabulary. That id is outside the tiny vocabulary, so the last
# tiny id takes its place.
LAST_ID = VOCAB - 1


def openai_gpt_config(**extra) -> OpenAIGPTConfig:
    return OpenAIGPTConfig(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        n_embd=WIDTH,
        n_layer=3,
        n_head=HEADS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        **extra,
    )


def gpt2_config() -> GPT2Config:
    return GPT2Config(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        n_embd=WIDTH,
        n_layer=3,
        n_head=HEADS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        bos_token_id=LAST_ID,
        eos_token_id=LAST_ID,
    )


def gpt_neo_config() -> GPTNeoConfig:
    return GPTNeoConfig(
        vocab_size=VOCAB,
        max_position_embeddings=POSITIONS,
        hidden_size=WIDTH,
        num_layers=4,
        num_heads=HEADS,
        attention_types=[[["global", "local"], 2]],
        window_size=4,
        intermediate_size=None,
        resid_dropout=0.0,
        embed_dropout=0.0,
        attention_dropout=0.0,
        classifier_dropout=0.0,
        bos_token_id=LAST_ID,
        eos_token_id=LAST_ID,
    )


def randomize(module: nn.Module, seed: int) -> None:
    """Overwrite every parameter of `module` with seeded values.

    LayerNorm weights start at one and biases at zero, so a loader that skipped
    them would still match. Random values make each of them change the outputs.
    `named_parameters` yields a tied tensor once, so a tie is kept.
    """
    torch.manual_seed(seed)
    norm_params = set()
    for sub in module.modules():
        if isinstance(sub, nn.LayerNorm):
            norm_params.update(id(p) for p in sub.parameters())
    with torch.no_grad():
        for name, param in module.named_parameters():
            if id(param) in norm_params and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.copy_(0.1 * torch.randn_like(param))


def check_tied(lm_head: nn.Linear, embedding: nn.Embedding) -> None:
    assert lm_head.weight is embedding.weight, "lm_head.weight is not tied to the token embedding"
    assert torch.equal(lm_head.weight, embedding.weight)


def save_model(model: nn.Module, name: str) -> list:
    """Save `model` to OUT/name and return the tensor names of its model.safetensors."""
    directory = OUT / name
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory, safe_serialization=True)
    # Keep only config.json and model.safetensors.
    (directory / "generation_config.json").unlink(missing_ok=True)
    with safe_open(directory / "model.safetensors", "pt") as f:
        names = sorted(f.keys())
    print(f"{name}/model.safetensors: {len(names)} tensors")
    for tensor_name in names:
        print(f"  {tensor_name}")
    return names


def check_reload(cls, name: str, inputs: dict, expected: dict) -> None:
    """Load OUT/name with `cls.from_pretrained` and compare its outputs to `expected`."""
    model = cls.from_pretrained(OUT / name).eval()
    with torch.no_grad():
        out = model(**inputs)
    for key, value in expected.items():
        torch.testing.assert_close(getattr(out, key), value, rtol=0, atol=1e-6)


def write_io(name: str, tensors: dict) -> None:
    tensors = {key: value.contiguous() for key, value in tensors.items()}
    save_file(tensors, OUT / f"{name}_io.safetensors")
    shapes = ", ".join(f"{key} {tuple(v.shape)} {v.dtype}" for key, v in tensors.items())
    print(f"{name}_io.safetensors: {shapes}")


def draw_input_ids(seed: int) -> torch.Tensor:
    """Draw a (2, 12) batch. Twelve tokens exceed the GPT-Neo window of 4."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (2, 12), generator=generator)


def write_openai_gpt() -> OpenAIGPTLMHeadModel:
    model = OpenAIGPTLMHeadModel(openai_gpt_config()).eval()
    randomize(model, seed=0)
    check_tied(model.lm_head, model.transformer.tokens_embed)
    names = save_model(model, "openai_gpt")
    assert "transformer.tokens_embed.weight" in names

    input_ids = draw_input_ids(seed=100)
    with torch.no_grad():
        logits = model(input_ids).logits
        hidden = model.transformer(input_ids).last_hidden_state
    check_reload(OpenAIGPTLMHeadModel, "openai_gpt", {"input_ids": input_ids}, {"logits": logits})
    write_io("openai_gpt", {"input_ids": input_ids, "logits": logits, "hidden": hidden})
    return model


def write_gpt2() -> None:
    config = gpt2_config()
    base = GPT2Model(config).eval()
    randomize(base, seed=1)
    names = save_model(base, "gpt2")
    prefixed = [n for n in names if n.startswith("transformer.")]
    assert not prefixed, f"gpt2 tensor names must not start with 'transformer.': {prefixed}"

    # GPT2Model has no LM head, so the logits come from a GPT2LMHeadModel that
    # loads the base weights. Its head is tied to the token embedding.
    lm = GPT2LMHeadModel(config).eval()
    lm.transformer.load_state_dict(base.state_dict())
    lm.tie_weights()
    check_tied(lm.lm_head, lm.transformer.wte)
    assert torch.equal(lm.lm_head.weight, base.wte.weight)

    input_ids = draw_input_ids(seed=101)
    with torch.no_grad():
        logits = lm(input_ids).logits
        hidden = base(input_ids).last_hidden_state
        lm_hidden = lm.transformer(input_ids).last_hidden_state
    torch.testing.assert_close(lm_hidden, hidden, rtol=0, atol=0)
    check_reload(GPT2LMHeadModel, "gpt2", {"input_ids": input_ids}, {"logits": logits})
    write_io("gpt2", {"input_ids": input_ids, "logits": logits, "hidden": hidden})


def write_gpt_neo() -> None:
    model = GPTNeoForCausalLM(gpt_neo_config()).eval()
    assert model.config.attention_layers == ["global", "local", "global", "local"]
    randomize(model, seed=2)
    check_tied(model.lm_head, model.transformer.wte)
    save_model(model, "gpt_neo")

    input_ids = draw_input_ids(seed=102)
    with torch.no_grad():
        logits = model(input_ids).logits
        hidden = model.transformer(input_ids).last_hidden_state
    check_reload(GPTNeoForCausalLM, "gpt_neo", {"input_ids": input_ids}, {"logits": logits})
    write_io("gpt_neo", {"input_ids": input_ids, "logits": logits, "hidden": hidden})


def write_double_heads(body: OpenAIGPTModel) -> None:
    model = OpenAIGPTDoubleHeadsModel(openai_gpt_config()).eval()
    model.transformer.load_state_dict(body.state_dict())
    check_tied(model.lm_head, model.transformer.tokens_embed)
    randomize(model.multiple_choice_head, seed=3)
    save_model(model, "openai_gpt_double_heads")

    generator = torch.Generator().manual_seed(103)
    input_ids = torch.randint(0, VOCAB, (2, 3, 8), generator=generator)
    # Index of the classification token in each choice.
    mc_token_ids = torch.tensor([[5, 6, 7], [7, 5, 6]])
    mc_labels = torch.tensor([1, 2])
    inputs = {
        "input_ids": input_ids,
        "mc_token_ids": mc_token_ids,
        "mc_labels": mc_labels,
        "labels": input_ids,
    }
    with torch.no_grad():
        out = model(**inputs)
    expected = {
        "logits": out.logits,
        "mc_logits": out.mc_logits,
        "loss": out.loss,
        "mc_loss": out.mc_loss,
    }
    check_reload(OpenAIGPTDoubleHeadsModel, "openai_gpt_double_heads", inputs, expected)
    # CrossEntropyLoss returns 0-dim tensors, and both losses are stored that way.
    assert out.loss.shape == ()
    assert out.mc_loss.shape == ()
    write_io(
        "openai_gpt_double_heads",
        {
            "input_ids": input_ids,
            "mc_token_ids": mc_token_ids,
            "mc_labels": mc_labels,
            # safetensors rejects two names for one storage.
            "lm_labels": input_ids.clone(),
            "lm_logits": out.logits,
            "mc_logits": out.mc_logits,
            "mc_loss": out.mc_loss,
            "lm_loss": out.loss,
        },
    )


def padded_batch(lengths: list, total: int, seed: int) -> torch.Tensor:
    """Draw rows of ids from [1, VOCAB) and right-pad them with id 0 to `total`."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (len(lengths), total), generator=generator)
    for row, length in enumerate(lengths):
        input_ids[row, length:] = 0
    return input_ids


def write_classify(body: OpenAIGPTModel) -> None:
    config = openai_gpt_config(num_labels=2, pad_token_id=0)
    model = OpenAIGPTForSequenceClassification(config).eval()
    model.transformer.load_state_dict(body.state_dict())
    randomize(model.score, seed=4)
    save_model(model, "openai_gpt_classify")

    input_ids = padded_batch([9, 6, 4], total=9, seed=104)
    labels = torch.tensor([0, 1, 1])
    # No attention mask: attention is causal and the padding is on the right,
    # so the pad tokens do not change the state at the last non-pad token.
    inputs = {"input_ids": input_ids, "labels": labels}
    with torch.no_grad():
        out = model(**inputs)
    expected = {"logits": out.logits, "loss": out.loss}
    check_reload(OpenAIGPTForSequenceClassification, "openai_gpt_classify", inputs, expected)
    assert out.loss.shape == ()
    write_io(
        "openai_gpt_classify",
        {"input_ids": input_ids, "logits": out.logits, "labels": labels, "loss": out.loss},
    )


# name: (layers, width, heads)
GPT2_SHAPES = {
    "gpt2-124m": (12, 768, 12),
    "gpt2-355m": (24, 1024, 16),
    "gpt2-774m": (36, 1280, 20),
    "gpt2-1.5b": (48, 1600, 25),
}
# Table 2.1 of "Language Models are Few-Shot Learners" (Brown et al., 2020).
# GPT-3 XL lists 24 heads of size 128 at width 2048, which GPT2Config cannot
# express because 24 * 128 != 2048. It is built with 16 heads of 128. The
# parameter count does not depend on the head count when heads * head size
# equals the width.
GPT3_SHAPES = {
    "gpt3-125m": (12, 768, 12),
    "gpt3-350m": (24, 1024, 16),
    "gpt3-760m": (24, 1536, 16),
    "gpt3-1.3b": (24, 2048, 16),
    "gpt3-2.7b": (32, 2560, 32),
    "gpt3-6.7b": (32, 4096, 32),
    "gpt3-175b": (96, 12288, 96),
}
# The transformer of DALL-E (Ramesh et al., 2021) as one GPT-2 stack: 64
# layers of 62 heads of 64, a vocabulary of 16,384 text tokens, 256 padding
# tokens and 8192 image codes, and 256 text plus 1024 image positions.
DALL_E_SHAPE = (64, 3968, 62)
DALL_E_VOCAB = 16384 + 256 + 8192
DALL_E_POSITIONS = 256 + 1024
PARAMETER_NOTES = {
    "gpt3-1.3b": (
        "Built with 16 heads of 128. The GPT-3 paper lists 24 heads of 128, "
        "which does not match width 2048."
    ),
    "gpt3-13b": (
        "Skipped: width 5140 with 40 heads of 128 (5120) cannot be expressed in GPT2Config."
    ),
    "counting": (
        "Unique parameters of the base model class. The LM head is tied to the token embedding."
    ),
}


def count_parameters(cls, config) -> int:
    with torch.device("meta"):
        model = cls(config)
    return sum(p.numel() for p in model.parameters())


def closed_form_count(vocab: int, positions: int, layers: int, width: int, final_norm: bool) -> int:
    """Count the parameters of a GPT model from its shape.

    Each block has two LayerNorms, the QKV and output projections and a 4x MLP,
    all with biases. `final_norm` adds the LayerNorm after the last block.
    """
    per_layer = 12 * width * width + 13 * width
    count = (vocab + positions) * width + layers * per_layer
    return count + 2 * width if final_norm else count


def write_parameter_counts() -> None:
    counts = {}
    config = OpenAIGPTConfig(n_layer=12, n_embd=768, n_head=12, n_positions=512, vocab_size=40478)
    counts["gpt1"] = count_parameters(OpenAIGPTModel, config)
    assert counts["gpt1"] == closed_form_count(40478, 512, 12, 768, final_norm=False)

    for shapes, positions in ((GPT2_SHAPES, 1024), (GPT3_SHAPES, 2048)):
        for name, (layers, width, heads) in shapes.items():
            config = GPT2Config(
                n_layer=layers,
                n_embd=width,
                n_head=heads,
                n_positions=positions,
                vocab_size=50257,
            )
            counts[name] = count_parameters(GPT2Model, config)
            expected = closed_form_count(50257, positions, layers, width, final_norm=True)
            assert counts[name] == expected, f"{name}: {counts[name]} != {expected}"

    layers, width, heads = DALL_E_SHAPE
    config = GPT2Config(
        n_layer=layers,
        n_embd=width,
        n_head=heads,
        n_positions=DALL_E_POSITIONS,
        vocab_size=DALL_E_VOCAB,
    )
    counts["dall-e-12b"] = count_parameters(GPT2Model, config)
    expected = closed_form_count(DALL_E_VOCAB, DALL_E_POSITIONS, layers, width, final_norm=True)
    assert counts["dall-e-12b"] == expected

    counts["notes"] = PARAMETER_NOTES
    text = json.dumps(counts, sort_keys=True, indent=2) + "\n"
    (OUT / "preset_parameters.json").write_text(text)
    print(f"preset_parameters.json:\n{text}")


def main() -> None:
    hf_logging.disable_progress_bar()
    OUT.mkdir(parents=True, exist_ok=True)
    openai_gpt = write_openai_gpt()
    write_gpt2()
    write_gpt_neo()
    write_double_heads(openai_gpt.transformer)
    write_classify(openai_gpt.transformer)
    write_parameter_counts()


if __name__ == "__main__":
    main()
