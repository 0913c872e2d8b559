"""Exact and near-duplicate detection over normalized text: MinHash signatures with LSH banding.

Texts are lower-cased, reduced to words, and cut into word bigrams; two texts are near-duplicates
when the Jaccard overlap of their bigram sets is at least a threshold. MinHash estimates the
overlap from 64 hash minima, and LSH (16 bands of 4 rows) finds candidate pairs without comparing
every pair (Broder 1997; Leskovec, Rajaraman & Ullman, Mining of Massive Datasets, ch. 3).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import numpy as np

NUM_PERM = 64
"""Hash functions per signature: the Jaccard estimate has a standard error of ~0.05 at 0.8."""
BANDS = 16
"""LSH bands of NUM_PERM / BANDS = 4 rows: pairs at Jaccard 0.8 share a band with p > 0.999."""
MAX_CANDIDATES = 64
"""Candidates verified per row: keeps templated data (thousands alike) linear, not quadratic."""
_PRIME = np.uint64(4294967311)  # smallest prime above 2**32: hashes are 32-bit
_WORD = re.compile(r"\w+")
_rng = np.random.default_rng(0x5EED)  # fixed: signatures are comparable across runs and files
_A = _rng.integers(1, 1 << 31, size=(NUM_PERM, 1), dtype=np.uint64)  # a * h < 2**63: no overflow
_B = _rng.integers(0, 1 << 32, size=(NUM_PERM, 1), dtype=np.uint64)
_BAND_MIX = _rng.integers(1, 1 << 63, size=NUM_PERM // BANDS, dtype=np.uint64) | np.uint64(1)


def normalize(text: str) -> str:
    """Case, punctuation and spacing removed: 'Hello,  World!' and 'hello world' are the same text."""
    return " ".join(_WORD.findall(text.casefold()))


def signature(normalized: str) -> np.ndarray:
    """MinHash signature (NUM_PERM,) of the text's word-bigram set."""
    words = normalized.split()
    hashes = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
    if len(hashes) > 1:
        # bigram hash from the two word hashes, kept within 32 bits
        hashes = (hashes[:-1] * np.uint64(1000003) + hashes[1:]) & np.uint64(0xFFFFFFFF)
    if len(hashes) == 0:
        hashes = np.zeros(1, dtype=np.uint64)
    return ((_A * hashes[None, :] + _B) % _PRIME).min(axis=1)  # (NUM_PERM,)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard overlap of two signatures' sets (compared as 32-bit values)."""
    return float(np.count_nonzero(a.astype(np.uint32) == b.astype(np.uint32))) / NUM_PERM


@dataclass
class DuplicateIndex:
    """Rows seen so far, queryable for an exact or near match (the earliest one wins).

    Kept as plain ints and bytes, a few hundred bytes per row, so that 100k rows stay small and
    give the garbage collector few containers to scan.
    """

    threshold: float
    exact: dict[int, int] = field(default_factory=dict)
    """hash of the normalized text -> line of its first occurrence."""
    buckets: list[dict[int, int | list[int]]] = field(default_factory=lambda: [{} for _ in range(BANDS)])
    """per band: band hash -> row index (one member) or row indices (several)."""
    signatures: list[bytes] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def find(self, normalized: str, sig: np.ndarray) -> tuple[str, int, float] | None:
        """('exact', line, 1.0) or ('near', line, similarity) for an earlier match; None when new."""
        line = self.exact.get(hash(normalized))
        if line is not None:
            return "exact", line, 1.0
        seen: set[int] = set()
        for band, key in enumerate(_band_keys(sig)):
            members = self.buckets[band].get(key)
            if members is None:
                continue
            for i in (members,) if isinstance(members, int) else members:
                if i in seen:
                    continue
                seen.add(i)
                score = similarity(sig, np.frombuffer(self.signatures[i], dtype=np.uint32))
                if score >= self.threshold:
                    return "near", self.lines[i], score
                if len(seen) >= MAX_CANDIDATES:
                    return None
        return None

    def add(self, normalized: str, sig: np.ndarray, line: int) -> None:
        self.exact.setdefault(hash(normalized), line)
        i = len(self.signatures)
        self.signatures.append(sig.astype(np.uint32).tobytes())
        self.lines.append(line)
        for band, key in enumerate(_band_keys(sig)):
            members = self.buckets[band].setdefault(key, i)
            if isinstance(members, int):
                if members != i:
                    self.buckets[band][key] = [members, i]
            elif len(members) < MAX_CANDIDATES:
                members.append(i)


def _band_keys(sig: np.ndarray) -> list[int]:
    """One 64-bit hash per band of NUM_PERM // BANDS signature rows (uint64 products wrap by design)."""
    rows = sig.astype(np.uint32).astype(np.uint64).reshape(BANDS, NUM_PERM // BANDS)
    return (rows * _BAND_MIX).sum(axis=1).tolist()


@dataclass
class RowPlaces:
    """Where a row is, as one int for the indexes (which keep ints): file number << 32 | line. A
    folder's rows come from many files, and "duplicates line 4" must say of which."""

    numbers: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def number(self, file: str, line: int) -> int:
        if file not in self.numbers:
            self.numbers[file] = len(self.files)
            self.files.append(file)
        return self.numbers[file] << 32 | line

    def text(self, place: int, file: str | None) -> str:
        """'line N' for a row of `file`, 'FILE:N' for a row of another file."""
        other, line = self.files[place >> 32], place & 0xFFFFFFFF
        return f"line {line}" if other == file else f"{other}:{line}"

    def only_file(self) -> str | None:
        """The one file seen so far, or None when there were several (a folder)."""
        return self.files[0] if len(self.files) == 1 else None
