"""The protocols providers implement (Embedder, BatchBackend; Generator, GenerationBatchBackend for text
generation), and the vector checks they share.

Nothing above a provider sees an SDK type: providers take strings and return float32 matrices of unit rows,
or `records.Generated` texts.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from kb.errors import InvalidResponseError
from kb.records import Generated, RemoteStatus, SpaceSpec

Matrix = NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into unit-length vectors of one embedding space."""

    @property
    def spec(self) -> SpaceSpec: ...

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        """One row per text (task type RETRIEVAL_DOCUMENT), L2-normalised."""
        ...

    def embed_counted(self, texts: Sequence[str]) -> tuple[Matrix, int | None]:
        """`embed_documents`, and the input tokens the provider counted (None when it does not say): what
        is billed, where the provider reports it."""
        ...

    def plan_requests(self, texts: Sequence[str]) -> list[range]:
        """How `embed_documents` would split these texts into requests: online embedding sends one request's
        worth at a time and stores its vectors before the next."""
        ...

    def embed_query(self, text: str) -> Matrix:
        """One row (task type RETRIEVAL_QUERY), L2-normalised."""
        ...

    def count_tokens(self, texts: list[str]) -> int | None:
        """The input tokens the provider would bill for these texts, asked of it; None if it cannot say."""
        ...

    def close(self) -> None:
        """Let go of connections and clients (a no-op for in-process models)."""
        ...


class RemoteJobs(Protocol):
    """What embedding and generation batches share: remote jobs and their files, by name."""

    def discard_input(self, display_name: str) -> None:
        """Delete input files an interrupted upload may have left under this display name (best effort)."""
        ...

    def get(self, name: str) -> RemoteStatus: ...

    def find(self, display_names: set[str]) -> dict[str, RemoteStatus]:
        """The remote jobs (of either kind) with these display names."""
        ...

    def cancel(self, name: str) -> None: ...

    def download(self, file_name: str, destination: Path) -> None: ...

    def delete_file(self, file_name: str) -> None: ...

    def close(self) -> None: ...


class BatchBackend(RemoteJobs, Protocol):
    """A batch embedding service (Gemini's Batch API, or kb's in-process local runner)."""

    mode: str

    def upload_input(
        self, display_name: str, model: str, dimensions: int, lines: Sequence[tuple[str, str]], folder: Path
    ) -> str: ...

    def create(self, display_name: str, model: str, input_file: str) -> RemoteStatus: ...


class Generator(Protocol):
    """Writes one text for one prompt, online (Gemini's generateContent)."""

    def generate(self, prompt: str, *, max_output_tokens: int) -> Generated:
        """The model's text and the tokens billed; a prompt the model will not answer (blocked, stopped
        for safety, no text) is an `InvalidRequestError` with the reason."""
        ...

    def close(self) -> None: ...


NO_LOCAL_GENERATION = "chunk contexts are written by a Gemini model, which the local provider does not have"


@runtime_checkable
class GenerationBatchBackend(RemoteJobs, Protocol):
    """A batch text generation service (Gemini's Batch API, batchGenerateContent, in file mode). Results
    are read with `kb.core.results.parse_generation_lines`."""

    def upload_generation_input(
        self,
        display_name: str,
        model: str,
        lines: Sequence[tuple[str, str]],
        folder: Path,
        max_output_tokens: int,
    ) -> str:
        """Write the (key, prompt) lines as a JSONL request file and upload it; the remote file name."""
        ...

    def create_generation(self, display_name: str, model: str, input_file: str) -> RemoteStatus:
        """Create the job (never retried: the caller looks for it by display name first)."""
        ...


def checked_unit_rows(rows: Sequence[Sequence[float]], expected_count: int, dimensions: int) -> Matrix:
    """Validate a provider's answer (count, dimensions, finite, non-zero) and L2-normalise each row."""
    if len(rows) != expected_count:
        raise InvalidResponseError(f"expected {expected_count} embeddings, got {len(rows)}")
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim != 2 or (expected_count and matrix.shape[1] != dimensions):
        width = matrix.shape[1] if matrix.ndim == 2 else "ragged"
        raise InvalidResponseError(f"expected {dimensions}-dimensional embeddings, got {width}")
    return normalized(matrix)


def normalized(matrix: Matrix) -> Matrix:
    if not np.isfinite(matrix).all():
        raise InvalidResponseError("embedding contains NaN or infinite values")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidResponseError("embedding is all zeros")
    unit: Matrix = (matrix / norms).astype(np.float32, copy=False)
    return unit
