"""The inputs every variant is timed on: short (~12 tokens) and long (128 tokens) texts, digit images."""

from __future__ import annotations

from pathlib import Path

SHORT_TEXTS = [
    "A man is playing a guitar on the street.",
    "The cat sleeps on a warm windowsill today.",
    "Stock markets rallied after the rate decision.",
    "She ordered a coffee and a slice of cake.",
    "Heavy rain is expected across the region tonight.",
    "The new library opens to the public next week.",
    "Two children are building a sandcastle together.",
    "Engineers fixed the bug before the release.",
]

_PARAGRAPH = (
    "Serverless inference trades a little latency on the first request for paying nothing while idle. "
    "A small sentence embedding model turns each input into a vector of a few hundred numbers, and those "
    "vectors are compared with cosine similarity to find related documents, cluster support tickets, or "
    "detect duplicate questions in a forum. Quantizing the weights to eight bits shrinks the file to a "
    "quarter of its size and speeds up matrix multiplication on processors with integer dot product "
    "instructions, while the accuracy of the embeddings stays close to the original. Packaging the model "
    "with a lean runtime keeps the deployment small enough for a function, so it starts quickly and scales "
    "with traffic. Measuring on the machine at hand, against the framework a team would otherwise deploy, "
    "keeps the comparison honest, because absolute times drift on shared hardware while ratios hold. "
)

SHORT, LONG, IMAGES = "short", "long", "images"
BATCHES = (1, 2, 4, 8, 16, 32)


def cycle(items: list, n: int) -> list:
    return [items[i % len(items)] for i in range(n)]


def long_texts(tokenizer_path: Path, tokens: int = 128, count: int = 8) -> list[str]:
    """Texts that tokenize to exactly `tokens` tokens (special tokens included), from different offsets."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_truncation()
    tok.no_padding()
    words = (_PARAGRAPH * 3).split()
    out = []
    for start in range(0, 9 * count, 9):
        text, n = "", 0
        for word in words[start:]:
            candidate = f"{text} {word}".strip()
            n = len(tok.encode(candidate).ids)
            if n > tokens:
                break
            text = candidate
        while len(tok.encode(text).ids) < tokens:  # pad short of a word with single characters
            text += " a"
        out.append(text)
        if len(tok.encode(text).ids) != tokens:
            raise ValueError(f"could not build a {tokens}-token text")
    return out


def token_counts(tokenizer_path: Path, texts: list[str]) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_truncation()
    tok.no_padding()
    return [len(tok.encode(t).ids) for t in texts]


def digit_images(count: int = 32) -> list:
    from ..recipes import digits

    data = digits.load_data()
    return [[[int(v) for v in row] for row in img] for img in data.x_test[:count]]


def workload(card, folder: Path) -> dict:
    """{input set name: list of inputs} for the model's task; the first item of the first set is the cold-start input."""
    if card.inputs.type == "text":
        tokenizer = folder / card.inputs.tokenizer
        return {SHORT: list(SHORT_TEXTS), LONG: long_texts(tokenizer)}
    return {IMAGES: digit_images()}


def describe(card, folder: Path, sets: dict) -> dict:
    if card.inputs.type == "text":
        tokenizer = folder / card.inputs.tokenizer
        return {name: {"tokens_per_input": token_counts(tokenizer, items)} for name, items in sets.items()}
    return {name: {"shape": list(card.inputs.shape)} for name in sets}
