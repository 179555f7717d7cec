"""The local embedding provider: wordllama `l2_supercat`, 256 dimensions, offline, on the CPU.

wordllama (MIT) ships its weights (`weights/l2_supercat_256.safetensors`, a 32,000 x 256 float16 table of
token embeddings) and its Llama-2 tokenizer (`tokenizers/l2_supercat_tokenizer_config.json`) inside its
wheel, so this provider needs no key, no network and no model download. kb reads the two files itself from
the installed package's folder (the table memory-mapped, the tokenizer with `tokenizers`, a wordllama
dependency) and never imports wordllama: its loader could fall back to downloading from Hugging Face, and
importing it costs start-up time for training code kb does not use.

A text's vector is the L2-normalised sum of its tokens' embeddings (wordllama's mean pooling, which
normalisation makes the same direction), so it is deterministic and has no length limit. The pooling is
done here rather than by `WordLlamaInference.embed`, which pads every batch to its longest text (memory
grows with batch size x longest text) and is several times slower. Tokens are gathered a window at a time,
so a very long text costs time in proportion to its length but bounded memory.

Texts that are empty or whitespace only (and, in theory, texts whose token embeddings sum to zero) have no
direction: they all get the fixed unit vector e0 = (1, 0, ..., 0). It is deterministic, never raises, and
is far from real text (cosine below about 0.2 with the fastapi docs, which are about 0.4 from each other).

The model is loaded once per process, on first use, under a lock.
"""

import importlib.util
import json
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from kb.core.results import saved_name
from kb.errors import ConfigError, RemoteGoneError
from kb.providers.base import Matrix, normalized
from kb.records import JobState, RemoteStatus, SpaceSpec
from kb.settings import LOCAL_DIMENSIONS, LOCAL_MODEL

PROVIDER = "local"
WORDLLAMA_CONFIG = "l2_supercat"
WEIGHTS_FILE = f"weights/{WORDLLAMA_CONFIG}_{LOCAL_DIMENSIONS}.safetensors"
_TENSOR = "embedding.weight"  # 32,000 x 256, float16 in the file
TOKENIZER_FILE = f"tokenizers/{WORDLLAMA_CONFIG}_tokenizer_config.json"
DEFAULT_BATCH_SIZE = 512

_REINSTALL = "reinstall kb's local model: pip install --force-reinstall 'wordllama>=0.4.0,<0.5'"
_TOKEN_WINDOW = 8192  # token embeddings gathered at once when pooling one text (8 MiB at 256 dims)
_FEW_TEXTS = 16  # fewer texts than this are pooled from the stored float16 table


@dataclass(slots=True)
class _Model:
    """The tokenizer, and the token table as stored (float16, memory-mapped: nothing read until used).

    A few texts (a question) gather their rows straight from the mapped file; many texts (a batch job) use
    the whole table in float32, read once, since gathering float16 rows is ~3.5x slower. Both give the same
    sums: float16 widens to float32 exactly."""

    tokenizer: Any  # tokenizers.Tokenizer, padding and truncation off
    stored: NDArray[np.float16]  # (vocabulary, LOCAL_DIMENSIONS)
    _wide: NDArray[np.float32] | None = None

    def table(self, texts: int) -> NDArray[np.floating[Any]]:
        if texts < _FEW_TEXTS:
            return self.stored
        if self._wide is None:
            self._wide = np.ascontiguousarray(self.stored, dtype=np.float32)
        return self._wide


_lock = threading.Lock()
_model: _Model | None = None


def _empty_vector() -> Matrix:
    vector = np.zeros((1, LOCAL_DIMENSIONS), dtype=np.float32)
    vector[0, 0] = 1.0
    return vector


class LocalEmbedder:
    """wordllama l2_supercat, 256 dims, on the CPU; loaded once per process (module-level cache, thread-safe).

    Documents and queries are embedded the same way (the model has no task types), so they share one space.
    """

    def __init__(self, *, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._batch_size = batch_size
        self._spec = SpaceSpec(provider=PROVIDER, model=LOCAL_MODEL, dimensions=LOCAL_DIMENSIONS)

    @property
    def spec(self) -> SpaceSpec:
        return self._spec

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        """One unit row per text, float32, shape (len(texts), 256)."""
        batches = list(self.embed_in_batches(texts))
        if not batches:
            return np.empty((0, LOCAL_DIMENSIONS), dtype=np.float32)
        if len(batches) == 1:
            return batches[0]
        return np.concatenate(batches)

    def embed_query(self, text: str) -> Matrix:
        """One unit row, shape (1, 256), in the same space as the documents."""
        return _embed([text])

    def embed_counted(self, texts: Sequence[str]) -> tuple[Matrix, int | None]:
        return self.embed_documents(texts), None  # free: nothing to count

    def count_tokens(self, texts: list[str]) -> int | None:
        return None  # nothing is billed: no count to calibrate against

    def close(self) -> None:
        """Nothing to release: the model is shared by the whole process."""

    def plan_requests(self, texts: Sequence[str]) -> list[range]:
        return [
            range(start, min(start + self._batch_size, len(texts)))
            for start in range(0, len(texts), self._batch_size)
        ]

    def embed_in_batches(self, texts: Sequence[str]) -> Iterator[Matrix]:
        """The rows of `embed_documents`, `batch_size` texts at a time (for progress reporting)."""
        for start in range(0, len(texts), self._batch_size):
            yield _embed(texts[start : start + self._batch_size])


def load_model() -> None:
    """Load the model now (it is otherwise loaded on first use); raises ConfigError if it cannot be."""
    _get_model()


def _embed(texts: Sequence[str]) -> Matrix:
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}")
    model = _get_model()
    rows = np.zeros((len(texts), LOCAL_DIMENSIONS), dtype=np.float32)
    blank = [not text.strip() for text in texts]
    wanted = [index for index, is_blank in enumerate(blank) if not is_blank]
    if wanted:
        encodings = _encode(model, [texts[index] for index in wanted])
        table = model.table(len(wanted))
        for index, encoding in zip(wanted, encodings, strict=True):
            rows[index] = _pool(table, encoding.ids)
    # A text with no tokens, or whose token embeddings cancel out, has no direction.
    empty = np.asarray(blank, dtype=bool) | ~(np.abs(rows) > 0).any(axis=1)
    rows[empty] = _empty_vector()
    return normalized(rows)


def _encode(model: _Model, texts: list[str]) -> list[Any]:
    try:
        encodings: list[Any] = model.tokenizer.encode_batch(texts, add_special_tokens=False)
    except TypeError:
        # Lone surrogates ("\ud800") are valid `str` but not UTF-8, which the tokenizer refuses.
        texts = [text.encode("utf-8", "replace").decode("utf-8") for text in texts]
        encodings = model.tokenizer.encode_batch(texts, add_special_tokens=False)
    return encodings


def _pool(table: NDArray[np.floating[Any]], token_ids: list[int]) -> NDArray[np.float32]:
    ids = np.asarray(token_ids, dtype=np.intp)
    # wordllama clamps ids beyond its table (the tokenizer's vocabulary matches it for l2_supercat).
    np.clip(ids, 0, table.shape[0] - 1, out=ids)
    total: NDArray[np.float32] = table[ids[:_TOKEN_WINDOW]].sum(axis=0, dtype=np.float32)
    for start in range(_TOKEN_WINDOW, len(ids), _TOKEN_WINDOW):
        total += table[ids[start : start + _TOKEN_WINDOW]].sum(axis=0, dtype=np.float32)
    return total


def _get_model() -> _Model:
    global _model
    model = _model
    if model is None:
        with _lock:
            if _model is None:
                _model = _load_model()
            model = _model
    return model


def _load_model() -> _Model:
    """The token table and tokenizer, read straight from the files wordllama's wheel ships (safetensors and
    a tokenizers JSON): importing wordllama itself would cost ~150 ms of start-up (its training code) for
    nothing kb uses, and reading them directly can never reach for the network."""
    package = wordllama_folder()
    missing = [name for name in (WEIGHTS_FILE, TOKENIZER_FILE) if not (package / name).is_file()]
    if missing:
        raise ConfigError(
            f"the local embedding model is incomplete: {', '.join(missing)} missing from {package}; "
            + _REINSTALL
        )
    try:
        from tokenizers import Tokenizer

        stored = _mapped_tensor(package / WEIGHTS_FILE, _TENSOR)
        tokenizer = Tokenizer.from_file(str(package / TOKENIZER_FILE))
    except Exception as exc:  # a damaged safetensors or tokenizer file, or tokenizers missing
        raise ConfigError(
            f"cannot load the local embedding model from {package}: {exc}; {_REINSTALL}"
        ) from exc
    if stored.ndim != 2 or stored.shape[1] != LOCAL_DIMENSIONS:
        raise ConfigError(
            f"the local embedding model in {package} has unexpected weights {stored.shape}; {_REINSTALL}"
        )
    # _pool works on each text's own token ids: no padding, no truncation.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return _Model(tokenizer=tokenizer, stored=stored)


def _mapped_tensor(path: Path, name: str) -> NDArray[np.float16]:
    """A float16 tensor of a safetensors file, memory-mapped. The format (huggingface/safetensors): an
    8-byte little-endian header length, a JSON header giving each tensor's dtype, shape and byte range
    after the header, then the raw little-endian data."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    info = header[name]
    if info["dtype"] != "F16":
        raise ValueError(f"tensor {name} is {info['dtype']}, not F16")
    start, end = info["data_offsets"]
    shape = tuple(info["shape"])
    if end - start != 2 * int(np.prod(shape)):
        raise ValueError(f"tensor {name} has {end - start} bytes for shape {shape}")
    mapped: NDArray[np.float16] = np.memmap(
        path, dtype="<f2", mode="r", offset=8 + length + start, shape=shape
    )
    # A float16 is NaN or infinite when its exponent bits are all set: one integer pass over the table,
    # ~4x quicker than np.isfinite, which a cold `kb search` pays for.
    if int((mapped.view(np.uint16) & 0x7FFF).max()) >= 0x7C00:
        raise ValueError(f"tensor {name} holds NaN or infinite values")
    return mapped


def wordllama_folder() -> Path:
    """The installed wordllama package's folder, found without importing it."""
    try:
        spec = importlib.util.find_spec("wordllama")
    except (ImportError, ValueError) as exc:
        spec = None
        reason = str(exc)
    else:
        reason = "not installed"
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the local embedding provider needs the wordllama package ({reason}); {_REINSTALL}"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve()


class LocalBatchBackend:
    """Runs "batch jobs" in-process with the local model, so local texts take the same road as Gemini's:
    tasks, ledger, worker, results saved then applied. A job completes inside `create`, which writes its
    results file atomically: the file existing *is* the job having succeeded, whichever process (`kb flush`,
    a worker killed since) ran it. A job whose file is gone is simply run again: it costs nothing."""

    mode = "local"

    def __init__(self, embedder: LocalEmbedder | None = None, folder: Path | None = None) -> None:
        self._embedder = embedder or LocalEmbedder()
        self._folder = folder

    def upload_input(
        self, display_name: str, model: str, dimensions: int, lines: Sequence[tuple[str, str]], folder: Path
    ) -> str:
        path = folder / f"{display_name}.input.jsonl"
        with path.open("wb") as handle:
            for key, text in lines:
                handle.write(orjson.dumps({"key": key, "text": text}) + b"\n")
        return str(path)

    def discard_input(self, display_name: str) -> None:
        if self._folder is not None:
            (self._folder / f"{display_name}.input.jsonl").unlink(missing_ok=True)

    def create(self, display_name: str, model: str, input_file: str) -> RemoteStatus:
        source = Path(input_file)
        if not source.is_file():
            raise RemoteGoneError(f"the local input file {input_file} is gone")
        output = source.with_name(_results_name(display_name))
        partial = output.with_name(output.name + ".part")
        with source.open("rb") as lines, partial.open("wb") as handle:
            for batch in _batches(
                (orjson.loads(line) for line in lines if line.strip()), self._embedder.batch_size
            ):
                matrix = self._embedder.embed_documents([item["text"] for item in batch])
                for item, vector in zip(batch, matrix, strict=True):
                    line = {"response": {"embedding": {"values": vector.tolist()}}, "key": item["key"]}
                    handle.write(orjson.dumps(line) + b"\n")
        partial.replace(output)  # the job succeeded exactly when this file exists
        return _succeeded(display_name, output)

    def get(self, name: str) -> RemoteStatus:
        display_name = name.removeprefix("local/")
        output = self._results(display_name)
        if output is None:
            # Never run to the end, or its results were moved away already: running it again is free.
            return RemoteStatus(name, display_name, JobState.FAILED, "LOCAL_LOST", None)
        return _succeeded(display_name, output)

    def find(self, display_names: set[str]) -> dict[str, RemoteStatus]:
        """Jobs whose results file exists: run to the end by a process that died before recording them."""
        found = {}
        for display_name in display_names:
            output = self._results(display_name)
            if output is not None:
                found[display_name] = _succeeded(display_name, output)
        return found

    def cancel(self, name: str) -> None:
        return None  # a local job is finished by the time it is created

    def download(self, file_name: str, destination: Path) -> None:
        source = Path(file_name)
        if source.exists():
            source.replace(destination)
        elif not destination.exists():  # (if it does, an earlier attempt moved it there)
            raise RemoteGoneError(f"the local result file {file_name} is gone (made on another machine?)")

    def delete_file(self, file_name: str) -> None:
        Path(file_name).unlink(missing_ok=True)

    def close(self) -> None:
        return None

    def _results(self, display_name: str) -> Path | None:
        """The job's results: as `create` wrote them, or already moved to where the worker saves results
        (`download`), by a worker killed before it could record that."""
        if self._folder is None:
            return None
        for name in (_results_name(display_name), saved_name(display_name)):
            path = self._folder / name
            if path.is_file():
                return path
        return None


def _results_name(display_name: str) -> str:
    return f"{display_name}.local-results.jsonl"


def _succeeded(display_name: str, output: Path) -> RemoteStatus:
    return RemoteStatus(
        f"local/{display_name}", display_name, JobState.SUCCEEDED, "LOCAL_SUCCEEDED", str(output)
    )


def _batches(items: Iterator[dict[str, str]], size: int) -> Iterator[list[dict[str, str]]]:
    batch: list[dict[str, str]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
