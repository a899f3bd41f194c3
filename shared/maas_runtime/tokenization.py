"""Text to token ids with Hugging Face `tokenizers`: batch padding, truncation, counts."""

from __future__ import annotations

import os

import numpy as np
from tokenizers import Tokenizer


class TextEncoder:
    def __init__(self, tokenizer_path: str | os.PathLike, max_length: int, pad_to_multiple_of: int = 1):
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # Shipped tokenizer.json files often pad every input to a fixed length: pad to the
        # longest input of the batch instead (rounded up to the card's inputs.pad_to_multiple_of),
        # so a short request pays for short inputs. Always on the right: length-aware batching
        # cuts a sub-batch's rows to their longest (`width`).
        pad = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(
            pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"), length=None, direction="right",
            pad_to_multiple_of=pad_to_multiple_of if pad_to_multiple_of > 1 else None,
        )
        self.tokenizer.enable_truncation(max_length=max_length)

    def width(self, longest: int) -> int:
        """The token length a batch whose longest input has `longest` tokens is padded to."""
        return -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of

    def encode(self, texts: list[str]) -> tuple[dict[str, np.ndarray], int]:
        """Model feeds for a batch, and how many of its texts were truncated."""
        # The fast variant skips character offsets, which serving never reads (explanations
        # tokenize their one text with offsets themselves).
        encodings = self.tokenizer.encode_batch_fast(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return feeds, sum(1 for e in encodings if e.overflowing)
