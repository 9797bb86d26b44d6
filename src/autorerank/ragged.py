"""Ragged integer arrays: many token sequences in one flat numpy buffer.

Assembling, truncating and padding token sequences this way costs a few numpy calls per
batch of pairs instead of Python work per pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

__all__ = ["Ragged"]


@dataclass(frozen=True)
class Ragged:
    """Rows of different lengths: row ``i`` is ``flat[offsets[i]:offsets[i + 1]]``."""

    flat: np.ndarray  # (total,) int64
    offsets: np.ndarray  # (rows + 1,) int64

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> Ragged:
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        return cls(flat, _offsets(lengths))

    @classmethod
    def constant(cls, row: Sequence[int], n_rows: int) -> Ragged:
        """The same ``row`` repeated ``n_rows`` times."""
        flat = np.tile(np.asarray(row, dtype=np.int64), n_rows)
        return cls(flat, _offsets(np.full(n_rows, len(row), dtype=np.int64)))

    @classmethod
    def filled(cls, lengths: np.ndarray, value: int) -> Ragged:
        """Rows of the given lengths holding one value (token type ids, for example)."""
        return cls(np.full(int(lengths.sum()), value, dtype=np.int64), _offsets(lengths))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> list[int]:
        return self.flat[self.offsets[i] : self.offsets[i + 1]].tolist()

    def head(self, keep: np.ndarray) -> Ragged:
        """Keep the first ``keep[i]`` items of each row (rows shorter than that stay whole)."""
        keep = np.minimum(keep, self.lengths)
        return self._select(self._positions() < np.repeat(keep, self.lengths), keep)

    def tail(self, keep: np.ndarray) -> Ragged:
        """Keep the last ``keep[i]`` items of each row."""
        keep = np.minimum(keep, self.lengths)
        drop = self.lengths - keep
        return self._select(self._positions() >= np.repeat(drop, self.lengths), keep)

    @staticmethod
    def concat(parts: Sequence[Ragged]) -> Ragged:
        """Row-wise concatenation: row ``i`` of the result is every part's row ``i`` in turn."""
        lengths = np.zeros(len(parts[0]), dtype=np.int64)  # (rows,)
        for part in parts:
            lengths += part.lengths
        offsets = _offsets(lengths)
        flat = np.empty(int(offsets[-1]), dtype=np.int64)
        start_in_row = np.zeros(len(lengths), dtype=np.int64)
        for part in parts:
            part_lengths = part.lengths
            shift = offsets[:-1] + start_in_row - part.offsets[:-1]
            flat[np.repeat(shift, part_lengths) + np.arange(len(part.flat))] = part.flat
            start_in_row += part_lengths
        return Ragged(flat, offsets)

    def pad(self, rows: np.ndarray, pad_value: int, side: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows`` as a dense ``(B, T)`` array padded on ``side``, and its 0/1 mask."""
        lengths = self.lengths[rows]
        width = int(lengths.max())
        columns = np.arange(width, dtype=np.int64)
        shift = (width - lengths) if side == "left" else np.zeros_like(lengths)
        mask = (columns >= shift[:, None]) & (columns < (shift + lengths)[:, None])  # (B, T)
        source = self.offsets[rows][:, None] + columns - shift[:, None]
        dense = np.full((len(rows), width), pad_value, dtype=np.int64)
        dense[mask] = self.flat[source[mask]]
        return dense, mask.astype(np.int64)

    def _positions(self) -> np.ndarray:
        """Each flat item's position within its row."""
        return np.arange(len(self.flat), dtype=np.int64) - np.repeat(self.offsets[:-1], self.lengths)

    def _select(self, mask: np.ndarray, new_lengths: np.ndarray) -> Ragged:
        return Ragged(self.flat[mask], _offsets(new_lengths))


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets
