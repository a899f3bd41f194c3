"""The inputs every variant is timed on: short (~12 tokens), long (128 tokens) and mixed texts
(real traffic's lengths: mostly short, a long tail, in arrival order), digit images."""

from __future__ import annotations

import math
import random
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

SHORT, LONG, MIXED, IMAGES = "short", "long", "mixed", "images"
BATCHES = (1, 2, 4, 8, 16, 32)
MIXED_BATCHES = (1, 32)
"""`mixed` is timed as requests of these sizes: single texts, and whole requests of 32."""
MIXED_ITEMS = 512
MIXED_SEED = 12

# The `mixed` lengths, in tokens with the special tokens: a seeded two-part distribution shaped
# like search queries and chat or ticket sentences with pasted paragraphs among them.
# Body (92%): lognormal around 14 tokens, clipped to 4-40. Tail (8%): Pareto from 30 tokens,
# capped at 240 (under the 256-token limit, so no text is truncated and every padded token is
# the workload's own). A request of 32 then almost always holds one text several times longer
# than its median: the case one-batch padding handles worst.
BODY_MEDIAN, BODY_SIGMA, BODY_MIN, BODY_MAX = 14, 0.30, 4, 40
TAIL_SHARE, TAIL_MIN, TAIL_SCALE, TAIL_ALPHA, TAIL_CAP = 0.08, 30, 30, 1.3, 240


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


def _mixed_length(rng: random.Random) -> int:
    if rng.random() < TAIL_SHARE:
        return int(min(TAIL_CAP, TAIL_MIN + TAIL_SCALE * (rng.paretovariate(TAIL_ALPHA) - 1)))
    return int(min(BODY_MAX, max(BODY_MIN, round(math.exp(rng.gauss(math.log(BODY_MEDIAN), BODY_SIGMA))))))


def mixed_texts(tokenizer_path: Path, count: int = MIXED_ITEMS, seed: int = MIXED_SEED) -> list[str]:
    """`count` texts in arrival order, each cut at a word boundary from a word stream of texts the
    project ships (the build's evaluation texts: English, 12 other languages, code, numbers,
    emoji; and this module's own) to tokenize to its drawn length (or one word more).
    Deterministic for a seed and tokenizer; nothing is downloaded."""
    from tokenizers import Tokenizer

    from ..builder.evalsets import embedding_texts

    sentences = embedding_texts() + SHORT_TEXTS + [s.strip() + "." for s in _PARAGRAPH.split(". ") if s.strip()]
    random.Random(0).shuffle(sentences)
    words = " ".join(sentences).split()
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_truncation()
    tok.no_padding()
    special = len(tok.encode("").ids)
    cost = [len(e.ids) for e in tok.encode_batch(words, add_special_tokens=False)]
    lengths, starts = random.Random(seed), random.Random(seed + 1)
    out = []
    for _ in range(count):
        target, i = _mixed_length(lengths), starts.randrange(len(words))
        picked, n = [], special
        while n < target:
            picked.append(words[i % len(words)])
            n += cost[i % len(words)]
            i += 1
        text = " ".join(picked)
        out.append(text[:1].upper() + text[1:])
    return out


def requests(items: list, size: int) -> list[list]:
    """Consecutive items as requests of `size`, in arrival order (a partial last one dropped)."""
    return [items[i : i + size] for i in range(0, len(items) - size + 1, size)]


def length_profile(lengths: list[int], size: int = 32) -> dict:
    """Token-length percentiles of a workload, and what its requests of `size` pad to in one batch."""
    import numpy as np

    lens = np.asarray(lengths)
    batches = [lens[i : i + size] for i in range(0, len(lens) - size + 1, size)]
    real = sum(int(b.sum()) for b in batches)
    padded = sum(int(b.max()) * len(b) for b in batches)
    return {
        "count": len(lens),
        **{f"p{q}": float(np.percentile(lens, q)) for q in (50, 90, 99)},
        "max": int(lens.max()),
        "mean": float(lens.mean()),
        "batch_size": size,
        "batch_longest": [int(b.max()) for b in batches],
        "batch_median": [float(np.median(b)) for b in batches],
        "padding_share_one_batch": 1 - real / padded if padded else 0.0,
    }


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


def workload(card, folder: Path, quick: bool = False) -> dict:
    """{input set name: list of inputs} for the model's task; the first item of the first set is the
    cold-start input. `quick` (a smoke test) streams two requests' worth of `mixed`."""
    if card.inputs.type == "text":
        tokenizer = folder / card.inputs.tokenizer
        return {SHORT: list(SHORT_TEXTS), LONG: long_texts(tokenizer), MIXED: mixed_texts(tokenizer, 64 if quick else MIXED_ITEMS)}
    return {IMAGES: digit_images()}


def batches_for(set_name: str) -> tuple[int, ...]:
    return MIXED_BATCHES if set_name == MIXED else BATCHES


def case_inputs(items: list, set_name: str, batch: int) -> list | dict:
    """What one timed call sends. `mixed` is a stream: a batch-1 call is its first text, a batch-32
    call is every request of 32 of the stream in turn (see `requests`); the others repeat their
    few texts to fill the batch."""
    if set_name == MIXED and batch > 1:
        return {"requests": requests(items, batch)}
    return cycle(items, batch)


def describe(card, folder: Path, sets: dict) -> dict:
    if card.inputs.type == "text":
        tokenizer = folder / card.inputs.tokenizer
        out = {}
        for name, items in sets.items():
            counts = token_counts(tokenizer, items)
            out[name] = {"tokens_per_input": counts}
            if name == MIXED:
                out[name]["profile"] = length_profile(counts)
        return out
    return {name: {"shape": list(card.inputs.shape)} for name in sets}
