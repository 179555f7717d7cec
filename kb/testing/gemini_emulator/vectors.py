"""Deterministic, crudely semantic embeddings: feature hashing of stemmed words and word bigrams.

Texts that share words get similar vectors, so vector search over them behaves like a weak real model.
Each feature lands in one signed bucket of every "Matryoshka" segment (1/24, 1/24, 1/12, 1/12, 1/4 and
1/2 of the native size), so every usual truncation (128, 256, 512, 768, 1536 of 3072) is a self-contained
hashing of the text, and its norm is well below 1 — as with the real service, only the native size is
unit length. A small text-hash noise term keeps texts with identical features apart.
"""

import functools
import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating[Any]]
UIntArray = NDArray[np.uint64]

NOISE_SHARE = 0.05  # of the feature norm
TASK_SHARE = 0.01  # queries and documents stay in one space
BIGRAM_WEIGHT = 0.5
STOP_WORD_WEIGHT = 0.15
NOISE_ROWS_PER_TEXT = 4
NOISE_BANK_ROWS = 256 * NOISE_ROWS_PER_TEXT  # one 256-row range per slot, so picked rows never cancel
CHUNK_ROWS = 256  # texts per numpy pass: bounds the (rows, dims) scratch matrix

_WORD = re.compile(r"\w+")
_SEGMENT_FRACTIONS = (1 / 24, 1 / 24, 1 / 12, 1 / 12, 1 / 4, 1 / 2)
_STOP_WORD_TEXT = (
    "a an and are as at be but by can do does for from had has have he her his how i if in into is it its "
    "me my no not of on or our she so than that the their them then there these they this those to was we "
    "were what when where which who why will with you your"
)
_STOP_WORDS = frozenset(_STOP_WORD_TEXT.split())
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def stem(word: str) -> str:
    """A light suffix stripper (-ing, -ly, -ed, -es, -s, final -e): plural and tense variants meet."""
    if len(word) > 5 and word.endswith("ing"):
        word = _undouble(word[:-3])
    elif len(word) > 4 and word.endswith("ly"):
        word = word[:-2]
    elif len(word) > 4 and word.endswith("ed"):
        word = _undouble(word[:-2])
    elif len(word) > 4 and word.endswith(("sses", "xes", "zes", "ches", "shes")):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


def _undouble(word: str) -> str:
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeioulsz":
        return word[:-1]
    return word


def _splitmix(values: UIntArray) -> UIntArray:
    """A 64-bit finaliser: spreads structured hashes (bigram combinations, segment salts) over all bits."""
    values = (values ^ (values >> np.uint64(30))) * _MIX_1
    values = (values ^ (values >> np.uint64(27))) * _MIX_2
    return values ^ (values >> np.uint64(31))


def segment_bounds(native_dims: int) -> list[tuple[int, int]]:
    """(start, size) of each Matryoshka segment; the last segment absorbs rounding."""
    bounds: list[tuple[int, int]] = []
    start = 0
    for index, fraction in enumerate(_SEGMENT_FRACTIONS):
        size = native_dims - start if index == len(_SEGMENT_FRACTIONS) - 1 else round(native_dims * fraction)
        if size > 0:
            bounds.append((start, size))
        start += max(size, 0)
    return bounds


@functools.lru_cache(maxsize=32)
def _uniform_rows(seed: bytes, rows: int, dims: int) -> FloatArray:
    """Unit rows of hash-derived values: stable across numpy versions, unlike a seeded generator."""
    raw = hashlib.shake_256(seed).digest(rows * dims * 4)
    values = np.frombuffer(raw, dtype="<u4").astype(np.float64).reshape(rows, dims)
    values = values / 2**31 - 1.0
    norms: FloatArray = np.linalg.norm(values, axis=1, keepdims=True)
    unit = values / norms
    unit.flags.writeable = False  # shared by every emulator through the cache
    return unit


class Vectorizer:
    """Embeds texts for one model. Caches word hashes, so the per-word cost is one dict lookup."""

    def __init__(self, model: str, native_dims: int) -> None:
        self.native_dims = native_dims
        self._seed = hashlib.blake2b(model.encode(), digest_size=16, person=b"kb-gemini-emu").digest()
        self._segments = segment_bounds(native_dims)
        sizes = np.array([size for _, size in self._segments], dtype=np.float64)
        # Energy per segment grows with the square root of its size.
        self._amplitudes = sizes**0.25
        self._starts = np.array([start for start, _ in self._segments], dtype=np.uint64)
        self._sizes = np.array([size for _, size in self._segments], dtype=np.uint64)
        self._salts = _splitmix(np.arange(1, len(self._segments) + 1, dtype=np.uint64) * _GOLDEN)
        self._word_ids: dict[str, int] = {}
        self._word_hashes: list[int] = []
        self._word_weights: list[float] = []
        self._table_cache: tuple[UIntArray, FloatArray] | None = None
        self._noise_bank = _uniform_rows(self._seed + b"noise", NOISE_BANK_ROWS, native_dims).astype(
            np.float32
        )
        self._task_vectors: dict[str, FloatArray] = {}

    def embed(
        self, texts: Sequence[str], dimensions: Sequence[int], task_types: Sequence[str | None]
    ) -> list[NDArray[np.float64]]:
        """One vector per text, cut to its dimensions (never renormalised), rounded like the API's JSON."""
        vectors: list[NDArray[np.float64]] = []
        for start in range(0, len(texts), CHUNK_ROWS):
            stop = start + CHUNK_ROWS
            full = self._embed_chunk(texts[start:stop], task_types[start:stop])
            for row, dims in zip(full, dimensions[start:stop], strict=True):
                vectors.append(np.round(row[:dims].astype(np.float64), 9))
        return vectors

    def _embed_chunk(self, texts: Sequence[str], task_types: Sequence[str | None]) -> FloatArray:
        vectors = self._feature_matrix(texts)
        scale: FloatArray = np.linalg.norm(vectors, axis=1, keepdims=True)
        scale[scale == 0] = 1.0  # a text without words is pure noise
        vectors += (NOISE_SHARE * scale) * self._noise(texts)
        for task_type in set(task_types) - {None, "TASK_TYPE_UNSPECIFIED"}:
            rows = np.array([task == task_type for task in task_types])
            vectors[rows] += (TASK_SHARE * scale[rows]) * self._task_vector(str(task_type))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def _feature_matrix(self, texts: Sequence[str]) -> FloatArray:
        lookup = self._word_ids.get
        ids: list[int] = []
        lengths: list[int] = []
        for text in texts:
            words = _WORD.findall(text.lower())
            text_ids = list(map(lookup, words))
            if None in text_ids:
                text_ids = [self._word_id(word) for word in words]
            ids.extend(text_ids)  # type: ignore[arg-type]  # no None left
            lengths.append(len(text_ids))
        id_array = np.array(ids, dtype=np.int64)
        rows = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        hashes, weights = self._tables()
        return self._scatter(len(texts), *self._with_bigrams(rows, hashes[id_array], weights[id_array]))

    def _with_bigrams(
        self, row_array: NDArray[np.int64], hash_array: UIntArray, weight_array: FloatArray
    ) -> tuple[NDArray[np.int64], UIntArray, FloatArray]:
        same_text = row_array[1:] == row_array[:-1]
        left, right = hash_array[:-1][same_text], hash_array[1:][same_text]
        rotated = (right << np.uint64(31)) | (right >> np.uint64(33))
        bigrams = _splitmix(left * _GOLDEN ^ rotated)
        bigram_weights = BIGRAM_WEIGHT * np.minimum(weight_array[:-1], weight_array[1:])[same_text]
        return (
            np.concatenate([row_array, row_array[1:][same_text]]),
            np.concatenate([hash_array, bigrams]),
            np.concatenate([weight_array, bigram_weights]),
        )

    def _scatter(
        self, row_count: int, rows: NDArray[np.int64], hashes: UIntArray, weights: FloatArray
    ) -> FloatArray:
        """Adds each feature, signed, to one bucket of every segment (bincount: a vectorised scatter-add)."""
        mixed = _splitmix(hashes[:, None] ^ self._salts[None, :])
        buckets = (self._starts + mixed % self._sizes).astype(np.int64)
        signs = np.where(mixed >> np.uint64(63) == 1, -1.0, 1.0)
        values = signs * self._amplitudes * weights[:, None]
        flat = rows[:, None] * self.native_dims + buckets
        counts = np.bincount(flat.ravel(), weights=values.ravel(), minlength=row_count * self.native_dims)
        matrix: FloatArray = counts.reshape(row_count, self.native_dims).astype(np.float32)
        return matrix

    def _word_id(self, word: str) -> int:
        word_id = self._word_ids.get(word)
        if word_id is None:
            digest = hashlib.blake2b(stem(word).encode(), digest_size=8, key=self._seed).digest()
            word_id = self._word_ids[word] = len(self._word_hashes)
            self._word_hashes.append(int.from_bytes(digest, "little"))
            self._word_weights.append(STOP_WORD_WEIGHT if word in _STOP_WORDS else 1.0)
        return word_id

    def _tables(self) -> tuple[UIntArray, FloatArray]:
        """The word hash and weight tables as arrays, rebuilt only when new words were seen."""
        if self._table_cache is None or len(self._table_cache[0]) != len(self._word_hashes):
            self._table_cache = (
                np.array(self._word_hashes, dtype=np.uint64),
                np.array(self._word_weights, dtype=np.float32),
            )
        return self._table_cache

    def _noise(self, texts: Sequence[str]) -> FloatArray:
        """A sum of a few signed rows of a fixed bank, chosen by the text's hash: distinct per text, cheap."""
        digests = b"".join(
            hashlib.blake2b(text.encode(), digest_size=8, key=self._seed).digest() for text in texts
        )
        picks = np.frombuffer(digests, dtype=np.uint8).reshape(len(texts), 8)
        noise = np.zeros((len(texts), self.native_dims), dtype=np.float32)
        for slot in range(NOISE_ROWS_PER_TEXT):
            sign = np.where((picks[:, 7] >> slot) & 1 == 1, np.float32(-1), np.float32(1))
            rows = slot * 256 + picks[:, slot].astype(np.int64)
            noise += sign[:, None] * self._noise_bank[rows]
        norms: FloatArray = np.linalg.norm(noise, axis=1, keepdims=True)
        return noise / norms

    def _task_vector(self, task_type: str) -> FloatArray:
        vector = self._task_vectors.get(task_type)
        if vector is None:
            rows = _uniform_rows(self._seed + task_type.encode(), 1, self.native_dims)
            vector = self._task_vectors[task_type] = rows[0].astype(np.float32)
        return vector
