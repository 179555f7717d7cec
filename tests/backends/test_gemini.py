"""The Gemini provider against the emulator, through the real google-genai SDK over HTTP."""

import numpy as np
import pytest

from kb.core.retry import RetryPolicy
from kb.errors import AuthenticationError, ModelNotFoundError, ProviderUnavailableError, RateLimitedError
from kb.providers.gemini import GeminiEmbedder
from kb.testing.gemini_emulator import Fault, GeminiEmulator
from tests.support.settings import EMULATOR_KEY

TEXTS = [f"Paragraph {n} about embedding batches and vector search." for n in range(250)]


def _embedder(emulator: GeminiEmulator, slept: list[float] | None = None, **kwargs: object) -> GeminiEmbedder:
    options: dict[str, object] = {
        "api_key": EMULATOR_KEY,
        "model": "gemini-embedding-001",
        "dimensions": 768,
        "base_url": emulator.base_url,
        "retry": RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=30.0),
        "sleep": (slept.append if slept is not None else lambda _: None),
    }
    options.update(kwargs)
    return GeminiEmbedder.connect(**options)  # type: ignore[arg-type]


def test_documents_are_split_into_requests_of_at_most_100(emulator: GeminiEmulator) -> None:
    embedder = _embedder(emulator)
    matrix = embedder.embed_documents(TEXTS)
    assert matrix.shape == (250, 768) and matrix.dtype == np.float32
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    requests = [r for r in emulator.log if r.route == "batchEmbedContents"]
    assert [r.item_count for r in requests] == [100, 100, 50]
    assert all(r.task_types == ["RETRIEVAL_DOCUMENT"] * r.item_count for r in requests)
    assert all(set(r.dimensions) == {768} for r in requests)
    # Same text, same vector as the service gives (up to normalisation).
    raw = np.asarray(emulator.vector(TEXTS[3], "gemini-embedding-001", 768, "RETRIEVAL_DOCUMENT"))
    assert np.allclose(matrix[3], raw / np.linalg.norm(raw), atol=1e-5)


def test_queries_use_the_query_task_type(emulator: GeminiEmulator) -> None:
    vector = _embedder(emulator).embed_query("how do batches work?")
    assert vector.shape == (1, 768)
    assert emulator.log[-1].task_types == ["RETRIEVAL_QUERY"]


def test_429_storm_is_survived_with_the_servers_delay(emulator: GeminiEmulator) -> None:
    emulator.faults.add(Fault(route="batchEmbedContents", status=429, times=3, retry_delay="7s"))
    slept: list[float] = []
    matrix = _embedder(emulator, slept).embed_documents(TEXTS[:10])
    assert matrix.shape == (10, 768)
    assert [r.status for r in emulator.log] == [429, 429, 429, 200]
    assert len(slept) == 3 and all(delay >= 7.0 for delay in slept)
    assert len(emulator.embedded_texts()) == 10  # billed once


def test_503_storm_backs_off_exponentially(emulator: GeminiEmulator) -> None:
    emulator.faults.add(Fault(route="batchEmbedContents", status=503, times=4))
    slept: list[float] = []
    _embedder(emulator, slept).embed_documents(TEXTS[:3])
    assert len(slept) == 4
    caps = [1.0, 2.0, 4.0, 8.0]
    assert all(cap / 2 <= delay <= cap for delay, cap in zip(slept, caps, strict=True))


def test_html_502_is_retried_like_other_server_errors(emulator: GeminiEmulator) -> None:
    emulator.faults.add(Fault(route="batchEmbedContents", status=502, html_body=True, times=1))
    assert _embedder(emulator).embed_documents(TEXTS[:2]).shape == (2, 768)


def test_retries_are_bounded_and_errors_carry_no_key(emulator: GeminiEmulator) -> None:
    emulator.faults.add(Fault(route="batchEmbedContents", status=429, times=None))
    with pytest.raises(RateLimitedError) as raised:
        _embedder(emulator).embed_documents(TEXTS[:2])
    assert len(emulator.log) == 5
    assert EMULATOR_KEY not in str(raised.value) and "429" in str(raised.value)


def test_unreachable_server_is_unavailable(emulator: GeminiEmulator) -> None:
    embedder = _embedder(emulator, base_url="http://127.0.0.1:9", timeout_s=2.0)
    with pytest.raises(ProviderUnavailableError):
        embedder.embed_documents(["x"])


def test_shut_down_model_is_not_found(emulator: GeminiEmulator) -> None:
    emulator.models.shut_down("text-embedding-004")
    embedder = _embedder(emulator, model="text-embedding-004")
    with pytest.raises(ModelNotFoundError, match="text-embedding-004"):
        embedder.embed_query("anything")
    assert len(emulator.log) == 1  # 404 is not retried


def test_refused_key_is_a_configuration_error(emulator: GeminiEmulator) -> None:
    embedder = _embedder(emulator, api_key="wrong-key-9876543210")
    with pytest.raises(AuthenticationError) as raised:
        embedder.embed_query("anything")
    assert "wrong-key-9876543210" not in str(raised.value)


def test_sdk_base_url_variable_keeps_working(
    emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    embedder = _embedder(emulator, base_url=None)
    assert embedder.embed_query("hello").shape == (1, 768)
    assert emulator.log[-1].status == 200
