"""Prompts -> CLIP token ids, as Stable Diffusion's pipelines tokenize them.

The BPE itself is transformers' `CLIPTokenizer` on the folder's vocab.json / merges.txt or
tokenizer.json (a
tokenizer is not model code, and byte-level BPE has details not worth re-deriving); only
transformers' tokenizer is used, never its models.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np


class PromptTokenizer:
    """prompts -> ids [B, max_length] int32: begin/end-of-text, padded and truncated."""

    def __init__(self, folder, max_length: int):
        folder = pathlib.Path(folder)
        if not any((folder / f).is_file() for f in ("vocab.json", "tokenizer.json")):
            raise FileNotFoundError(f"no tokenizer at {folder} (no vocab.json or tokenizer.json)")
        try:
            from transformers import CLIPTokenizer
        except ImportError:
            raise ImportError("Stable Diffusion's tokenizer needs transformers: "
                              "pip install 'dg-jax[sd]'") from None
        self._tokenizer = CLIPTokenizer.from_pretrained(str(folder))
        self.max_length = min(max_length, self._tokenizer.model_max_length)

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = self._tokenizer(list(prompts), padding="max_length", max_length=self.max_length,
                              truncation=True, return_tensors="np").input_ids
        return ids.astype(np.int32)
