"""Vectors for search benchmarks: clustered ones shaped like real text embeddings, and random ones.

Real embeddings are anisotropic (any two texts have cosine similarity around 0.5 with gemini-embedding-001)
and clustered (a question's nearest chunks sit a little above the crowd). `clustered` draws unit vectors from
a mixture of 2,000 Zipf-sized clusters around a shared offset: median cosine 0.50, the 10th nearest neighbour
of a query 0.76, the 100th 0.66. Random unit vectors have no neighbours worth the name (the nearest is barely
above 0.13 at 768 dimensions): approximate indexes do badly on them, so they are reported too.
"""

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float32]
_BLOCK = 50_000


def clustered(count: int, dimensions: int, seed: int = 1, clusters: int = 2_000) -> Matrix:
    rng = np.random.default_rng(seed)
    common = _unit(rng.standard_normal((1, dimensions)).astype(np.float32))[0]
    centers = _unit(rng.standard_normal((clusters, dimensions)).astype(np.float32))
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    weights /= weights.sum()
    out = np.empty((count, dimensions), dtype=np.float32)
    for start in range(0, count, _BLOCK):
        size = min(_BLOCK, count - start)
        members = rng.choice(clusters, size=size, p=weights)
        noise = rng.standard_normal((size, dimensions)).astype(np.float32) / np.sqrt(dimensions)
        out[start : start + size] = _unit(_unit(centers[members] + noise) + common)
    return out


def random_unit(count: int, dimensions: int, seed: int = 1) -> Matrix:
    rng = np.random.default_rng(seed)
    out = np.empty((count, dimensions), dtype=np.float32)
    for start in range(0, count, _BLOCK):
        size = min(_BLOCK, count - start)
        out[start : start + size] = _unit(rng.standard_normal((size, dimensions)).astype(np.float32))
    return out


def exact_top(queries: Matrix, matrix: Matrix, k: int = 10) -> NDArray[np.int64]:
    """Each query's k nearest rows by cosine (unit vectors), nearest first: the ground truth."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 16):
        similarities = queries[start : start + 16] @ matrix.T
        top = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarities, top, axis=1), axis=1, kind="stable")
        out[start : start + 16] = np.take_along_axis(top, order, axis=1)
    return out


def recall_at(found: list[list[int]], truth: NDArray[np.int64], k: int = 10) -> float:
    """Mean share of each query's true k nearest that were found among its first k results."""
    hits = [len(set(f[:k]) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 0.0


def _unit(matrix: Matrix) -> Matrix:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
