"""Writes the parity fixture of the `llama` crate.

A seeded tiny `LlamaForCausalLM` (2 layers, 8 query heads, 2 KV heads,
vocabulary 256) from transformers, saved three ways under
llama/tests/fixtures/:

- tiny/: config.json and model.safetensors, the Hugging Face layout;
- tiny.gguf: the same weights in F32 as llama.cpp's converter writes them,
  with the Q and K projections permuted for the interleaved rotary layout and
  a byte-level vocabulary of 256 tokens;
- tiny_io.safetensors: input_ids (2 x 12), the logits transformers computes
  for them, and the hidden state after the final norm.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/llama_tiny.py
"""

from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = Path(__file__).resolve().parent.parent / "llama" / "tests" / "fixtures"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                # Norm weights start at one. Random values make the test check them.
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.copy_(0.1 * torch.randn_like(param))
    return model


def permute(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """The row permutation llama.cpp's convert_hf_to_gguf.py applies to Q and K."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf_name: str) -> str:
    if hf_name in GGUF_NAMES:
        return GGUF_NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{GGUF_NAMES[rest]}"


def write_gguf(model: LlamaForCausalLM, path: Path) -> None:
    c = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_vocab_size(c.vocab_size)
    # A byte-level vocabulary: the 256 bytes in GPT-2's printable alphabet,
    # three of them relabelled as control tokens.
    alphabet = gpt2_alphabet()
    tokens = [alphabet[b] for b in range(256)]
    tokens[0], tokens[1], tokens[2] = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
    types = [gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * 253
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in model.state_dict().items():
        t = tensor.float()
        if name.endswith("q_proj.weight"):
            t = permute(t, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            t = permute(t, c.num_key_value_heads)
        writer.add_tensor(gguf_name(name), t.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gpt2_alphabet() -> dict:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def main() -> None:
    model = build_model()
    (OUT / "tiny").mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT / "tiny", safe_serialization=True)
    for extra in ("generation_config.json",):
        (OUT / "tiny" / extra).unlink(missing_ok=True)
    write_gguf(model, OUT / "tiny.gguf")

    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 256, (2, 12), generator=generator)
    with torch.no_grad():
        out = model(input_ids, output_hidden_states=True)
    save_file(
        {
            "input_ids": input_ids.contiguous(),
            "logits": out.logits.float().contiguous(),
            "last_hidden_state": out.hidden_states[-1].float().contiguous(),
        },
        OUT / "tiny_io.safetensors",
    )
    print(f"wrote {OUT}: logits {tuple(out.logits.shape)}, |logits| max {out.logits.abs().max():.3f}")


if __name__ == "__main__":
    np.random.seed(0)
    main()
