"""The local provider (wordllama l2_supercat): offline loading, vector contract, semantics, throughput."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kb.providers.local
from kb.errors import ConfigError
from kb.providers.base import Embedder
from kb.providers.local import LocalEmbedder
from kb.records import SpaceSpec
from kb.settings import LOCAL_DIMENSIONS, LOCAL_MODEL
from tests.support.files import HANDBOOK, HANDBOOK_QUERIES

QUERIES = HANDBOOK_QUERIES
TEXTS = [
    "How do I enable CORS for my API?",
    "Background tasks run after the response is sent.",
    "Path parameters are declared with the same syntax as Python format strings.",
    "Ünïcödé, 日本語 and emoji 🚀 are fine too.",
]
E0 = np.eye(1, LOCAL_DIMENSIONS, dtype=np.float32)

# Run in a fresh process: from `import kb.providers.local` on, the network is unreachable.
OFFLINE_SCRIPT = r"""
import json, logging, os, socket, sys

attempts = []

def refuse(name):
    def refused(*args, **kwargs):
        attempts.append(name + repr(args[1:] if name.startswith("socket.") else args)[:200])
        raise OSError("network is unreachable (kb offline test)")
    return refused

socket.socket.connect = refuse("socket.connect")
socket.socket.connect_ex = refuse("socket.connect_ex")
socket.create_connection = refuse("create_connection")
socket.getaddrinfo = refuse("getaddrinfo")

root = logging.getLogger()
before = [repr(handler) for handler in root.handlers], root.level

import kb.providers.local
imported_early = "wordllama" in sys.modules
embedder = kb.providers.local.LocalEmbedder()
vector = embedder.embed_query(sys.argv[1])
documents = embedder.embed_documents(json.loads(sys.argv[2]))
after = [repr(handler) for handler in root.handlers], root.level
print(json.dumps({
    "attempts": attempts,
    "imported_early": imported_early,
    "imported_late": "wordllama" in sys.modules,
    "folder": str(kb.providers.local.wordllama_folder()),
    "logging_unchanged": before == after,
    "query": vector.tobytes().hex(),
    "documents": documents.tobytes().hex(),
}))
"""


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.fixture
def fresh_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the process-wide model for this test (restored afterwards), so the test loads it again."""
    monkeypatch.setattr(kb.providers.local, "_model", None)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """No network (every connect and DNS lookup is recorded and refused) and an empty home and caches."""
    attempts: list[str] = []

    def refuse(name: str) -> Any:
        def refused(*args: object, **kwargs: object) -> None:
            attempts.append(name)
            raise OSError("network is unreachable (kb offline test)")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    home = tmp_path / "home"
    home.mkdir()
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "HF_HOME": str(home / "hf"),
    }.items():
        monkeypatch.setenv(name, value)
    yield attempts
    assert not any(home.iterdir()), "nothing may be written to the home folder or caches"


def test_offline_load_in_process(fresh_model: None, offline: list[str]) -> None:
    kb.providers.local.load_model()
    vector = LocalEmbedder().embed_query("How do I enable CORS?")
    assert vector.shape == (1, LOCAL_DIMENSIONS)
    assert offline == [], f"network attempted: {offline}"


def test_offline_fresh_process_is_cheap_to_import_and_deterministic(
    embedder: LocalEmbedder, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    env["HF_HOME"] = str(home / "hf")
    # -W error: wordllama's "Local tokenizer config not found ... Falling back to Hugging Face" warning,
    # the only way to its (Rust, socket-patch-proof) tokenizer download, would fail the run.
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", OFFLINE_SCRIPT, TEXTS[0], json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["attempts"] == []
    assert not any(home.iterdir())
    assert report["imported_early"] is False and report["imported_late"] is False, (
        "kb never imports wordllama"
    )
    assert report["logging_unchanged"]
    assert report["folder"] == str(kb.providers.local.wordllama_folder())
    # Same text, same bytes, in another process.
    assert bytes.fromhex(report["query"]) == embedder.embed_query(TEXTS[0]).tobytes()
    assert bytes.fromhex(report["documents"]) == embedder.embed_documents(TEXTS).tobytes()


def test_spec(embedder: LocalEmbedder) -> None:
    assert embedder.spec == SpaceSpec(provider="local", model=LOCAL_MODEL, dimensions=LOCAL_DIMENSIONS)
    assert embedder.spec.dimensions == 256
    satisfies: Embedder = embedder
    assert satisfies.spec.provider == "local"


def test_unit_float32_rows_and_determinism(embedder: LocalEmbedder) -> None:
    matrix = embedder.embed_documents(TEXTS)
    assert matrix.shape == (len(TEXTS), LOCAL_DIMENSIONS)
    assert matrix.dtype == np.float32
    assert np.isfinite(matrix).all()
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(matrix, embedder.embed_documents(TEXTS))
    assert len({row.tobytes() for row in matrix}) == len(TEXTS)
    # Queries live in the same space, and a row does not depend on its batch.
    for index, text in enumerate(TEXTS):
        query = embedder.embed_query(text)
        assert query.shape == (1, LOCAL_DIMENSIONS) and query.dtype == np.float32
        assert np.array_equal(query[0], matrix[index])


def test_embed_in_batches(embedder: LocalEmbedder) -> None:
    small = LocalEmbedder(batch_size=3)
    texts = [*TEXTS, "one more", "and another", ""]
    batches = list(small.embed_in_batches(texts))
    assert [batch.shape[0] for batch in batches] == [3, 3, 1]
    assert np.array_equal(np.concatenate(batches), embedder.embed_documents(texts))
    assert np.array_equal(small.embed_documents(texts), embedder.embed_documents(texts))
    assert list(small.embed_in_batches([])) == []
    empty = small.embed_documents([])
    assert empty.shape == (0, LOCAL_DIMENSIONS) and empty.dtype == np.float32
    with pytest.raises(ValueError, match="batch_size"):
        LocalEmbedder(batch_size=0)


def test_same_vectors_as_wordllama_itself(embedder: LocalEmbedder) -> None:
    """kb reads wordllama's files itself; wordllama's own loader and pooling give the same vectors."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from wordllama import WordLlama  # type: ignore[import-untyped]  # (it calls logging.basicConfig)

    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    package = kb.providers.local.wordllama_folder()
    reference = WordLlama.load(config="l2_supercat", dim=256, cache_dir=package, disable_download=True)
    texts = [*TEXTS, (HANDBOOK / "tutorial" / "cors.md").read_text(encoding="utf-8")]
    expected = reference.embed(texts, norm=True)
    np.testing.assert_allclose(embedder.embed_documents(texts), expected, atol=2e-6)


def test_blank_texts_get_the_fixed_unit_vector(embedder: LocalEmbedder) -> None:
    blanks = ["", " ", "\n\t  \r\n", "\u3000"]
    matrix = embedder.embed_documents([*blanks, "text"])
    assert np.array_equal(matrix[: len(blanks)], np.repeat(E0, len(blanks), axis=0))
    assert not np.array_equal(matrix[-1], E0[0])
    assert np.array_equal(embedder.embed_query(""), E0)
    # Far from real text.
    documents = embedder.embed_documents(TEXTS)
    assert (documents @ E0[0] < 0.3).all()


def test_odd_strings_never_raise(embedder: LocalEmbedder) -> None:
    odd = ["\x00", "\ud800 lone surrogate", "a", "\u200b", "🚀" * 50, "<0x0A>", "[PAD]"]
    matrix = embedder.embed_documents(odd)
    assert matrix.shape == (len(odd), LOCAL_DIMENSIONS) and np.isfinite(matrix).all()
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    with pytest.raises(TypeError):
        embedder.embed_documents([b"bytes"])  # type: ignore[list-item]


def test_very_long_text(embedder: LocalEmbedder) -> None:
    phrase = "FastAPI routers split a bigger application into several files. "
    long_text = phrase * 3_000  # ~190 kB, ~36,000 tokens: several pooling windows
    assert len(long_text) > 150_000
    long_vector = embedder.embed_query(long_text)
    assert np.isfinite(long_vector).all()
    # A bag of tokens: repeating a text barely moves its vector.
    assert float(long_vector[0] @ embedder.embed_query(phrase)[0]) > 0.99


def test_loaded_once_across_threads(fresh_model: None, monkeypatch: pytest.MonkeyPatch) -> None:
    real_load = kb.providers.local._load_model
    loads: list[int] = []

    def counting_load() -> Any:
        loads.append(threading.get_ident())
        time.sleep(0.05)  # widen the race window
        return real_load()

    monkeypatch.setattr(kb.providers.local, "_load_model", counting_load)
    barrier = threading.Barrier(8)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            results.append(LocalEmbedder().embed_query(TEXTS[1]).tobytes())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(loads) == 1
    assert len(set(results)) == 1


def test_missing_wordllama_is_a_config_error(fresh_model: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wordllama", None)  # makes find_spec("wordllama") fail
    with pytest.raises(ConfigError, match=r"pip install --force-reinstall"):
        LocalEmbedder().embed_query("hello")
    assert kb.providers.local._model is None


def test_missing_weights_are_a_config_error(fresh_model: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kb.providers.local, "WEIGHTS_FILE", "weights/l2_supercat_4096.safetensors")
    with pytest.raises(ConfigError, match=r"l2_supercat_4096.*pip install --force-reinstall"):
        kb.providers.local.load_model()


def _safetensors(path: Path, table: "np.ndarray[Any, Any]") -> Path:
    header = json.dumps(
        {"t": {"dtype": "F16", "shape": list(table.shape), "data_offsets": [0, table.nbytes]}}
    ).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + table.astype("<f2").tobytes())
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_weights_with_a_value_that_is_not_finite_are_refused(tmp_path: Path, bad: float) -> None:
    table = np.linspace(-65504, 65504, 12, dtype=np.float16).reshape(3, 4)  # the largest finite float16s
    assert kb.providers.local._mapped_tensor(_safetensors(tmp_path / "ok", table), "t").shape == (3, 4)
    table[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        kb.providers.local._mapped_tensor(_safetensors(tmp_path / "bad", table), "t")


def _documents() -> tuple[list[str], list[str]]:
    files = sorted(HANDBOOK.rglob("*.md"))
    names = [path.relative_to(HANDBOOK).as_posix() for path in files]
    return names, [path.read_text(encoding="utf-8")[:1000] for path in files]


def test_semantic_recall_on_the_handbook(embedder: LocalEmbedder, capsys: pytest.CaptureFixture[str]) -> None:
    names, texts = _documents()
    queries = json.loads(QUERIES.read_text(encoding="utf-8"))
    documents = embedder.embed_documents(texts)
    hits_at_1 = hits_at_5 = 0
    for query in queries:
        scores = documents @ embedder.embed_query(query["q"])[0]
        top = [names[index] for index in np.argsort(-scores, kind="stable")[:5]]
        hits_at_1 += top[0] in query["relevant"]
        hits_at_5 += any(name in query["relevant"] for name in top)
    recall_at_1, recall_at_5 = hits_at_1 / len(queries), hits_at_5 / len(queries)
    with capsys.disabled():
        print(
            f"\nlocal recall on {len(texts)} handbook pages (first 1,000 chars), {len(queries)} queries: "
            f"@1 {recall_at_1:.2f}, @5 {recall_at_5:.2f}"
        )
    # Measured with wordllama 0.4.0.post1: @1 0.50, @5 0.80 (chance with 25 pages: 0.04 and 0.20).
    assert recall_at_5 >= 0.7
    assert recall_at_1 >= 0.4


def test_throughput(embedder: LocalEmbedder, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = "\n\n".join(path.read_text(encoding="utf-8") for path in sorted(HANDBOOK.rglob("*.md")))
    paragraphs: list[str] = []
    current = ""
    for paragraph in corpus.split("\n\n"):
        current = f"{current}\n\n{paragraph}" if current else paragraph
        if len(current) >= 450:
            paragraphs.append(current[:550])
            current = ""
    paragraphs = (paragraphs * (3000 // len(paragraphs) + 1))[:3000]
    started = time.perf_counter()
    matrix = embedder.embed_documents(paragraphs)
    elapsed = time.perf_counter() - started
    assert matrix.shape == (3000, LOCAL_DIMENSIONS)
    mean_chars = sum(map(len, paragraphs)) / len(paragraphs)
    with capsys.disabled():
        print(
            f"\nlocal throughput: {len(paragraphs) / elapsed:,.0f} texts/s "
            f"({len(paragraphs)} paragraphs of {mean_chars:.0f} chars in {elapsed:.2f} s)"
        )
