"""Sentence embeddings with all-MiniLM-L6-v2: mean of the last hidden states over real tokens,
then L2-normalised, as its sentence-transformers config (modules.json, 1_Pooling) specifies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

MAX_EMBED_TOKENS = 256
"""Longest input the encoder sees; all-MiniLM-L6-v2 was trained on 128 and is configured for 256."""
EMBED_BATCH = 32
"""Texts per forward pass: a 22M-parameter encoder is fast; this bounds padding waste and memory."""


@dataclass
class Embedder:
    encoder: Any
    tokenizer: Any
    name: str
    """Package and version, part of the index's cache key."""

    @classmethod
    def load(cls) -> Embedder:
        from ..model.loading import load_embedder

        return cls(*load_embedder())

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 unit vectors, one per text; similar meanings have large dot products."""
        out = []
        for start in range(0, len(texts), EMBED_BATCH):
            batch = self.tokenizer(list(texts[start : start + EMBED_BATCH]), padding=True, truncation=True,
                                   max_length=MAX_EMBED_TOKENS, return_tensors="pt")
            hidden = self.encoder(**batch).last_hidden_state  # (B, T, d)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # (B, d)
            out.append(torch.nn.functional.normalize(mean, dim=-1).numpy().astype(np.float32))
        dim = self.encoder.config.hidden_size
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)
