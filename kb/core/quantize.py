"""Compact codes of unit vectors, for scanning a million of them in memory: one sign bit and one int8 level
per dimension, both relative to a center fitted on the space's first vectors.

Signs (96 bytes at 768 dimensions) are compared by Hamming distance, ~25 ms for a million vectors in numpy;
levels (768 bytes) re-score the few thousand nearest by signs at near float precision. Exact float vectors
then settle the final order (`kb.search.vectorindex`). Centering matters: real embeddings share a large common
component, and signs of raw values would mostly agree. Pure numpy, no SQL.
"""

import secrets
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float32]
# Levels span twice the largest deviation seen at fit time, so vectors written later rarely clip.
_HEADROOM = 2.0
_ENCODE_BLOCK = 1_000
# A quantizer fitted on fewer vectors than this is refitted when the space doubles (kb.store.vectors).
FIT_SAMPLE = 10_000


def sign_bytes(dimensions: int) -> int:
    """Bytes of one vector's signs: whole 64-bit words, so that numpy compares them a word at a time."""
    return (dimensions + 63) // 64 * 8


@dataclass(frozen=True, slots=True)
class Codes:
    signs: NDArray[np.uint8]  # (n, sign_bytes)
    levels: NDArray[np.int8]  # (n, dimensions)


@dataclass(frozen=True, slots=True)
class Quantizer:
    center: Matrix  # (dimensions,)
    scale: Matrix  # (dimensions,): the value of one level step, per dimension
    fitted_on: int  # vectors in the fit sample
    token: str  # new at every fit: codes of another fit are not comparable

    @classmethod
    def fit(cls, sample: Matrix) -> "Quantizer":
        dimensions = sample.shape[1]
        center = sample.mean(axis=0).astype(np.float32)
        spread = np.abs(sample - center).max(axis=0)
        # A floor for a sample too small to show a dimension's spread: four standard deviations of an
        # isotropic unit vector's component.
        floor = 4.0 / np.sqrt(dimensions)
        scale = (np.maximum(spread * _HEADROOM, floor) / 127.0).astype(np.float32)
        return cls(center, scale, len(sample), secrets.token_hex(8))

    def encode(self, matrix: Matrix) -> Codes:
        """Codes of the rows, computed a block at a time (the float temporaries stay small)."""
        signs = np.empty((len(matrix), sign_bytes(matrix.shape[1])), dtype=np.uint8)
        levels = np.empty(matrix.shape, dtype=np.int8)
        for start in range(0, len(matrix), _ENCODE_BLOCK):
            residual = matrix[start : start + _ENCODE_BLOCK] - self.center
            signs[start : start + len(residual)] = self.signs(residual)
            residual /= self.scale
            np.rint(residual, out=residual)
            np.clip(residual, -127, 127, out=residual)
            levels[start : start + len(residual)] = residual
        return Codes(signs, levels)

    def signs(self, residual: Matrix) -> NDArray[np.uint8]:
        """Packed sign bits of centered vectors, padded to whole 64-bit words."""
        packed = np.packbits(np.atleast_2d(residual) > 0, axis=1)
        width = sign_bytes(residual.shape[-1])
        if packed.shape[1] == width:
            return packed
        padded = np.zeros((packed.shape[0], width), dtype=np.uint8)
        padded[:, : packed.shape[1]] = packed
        return padded
