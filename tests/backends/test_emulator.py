"""The Gemini emulator, driven by the real google-genai SDK: embeddings, limits, auth, files, faults, billing.

Batch jobs are in test_emulator_batches.py. Each test keeps its Client referenced for its whole run
(gemini-wire.md §1.6) and never leaves 127.0.0.1.
"""

import datetime
import io
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest
from google import genai
from google.genai import errors, types

from kb.testing.gemini_emulator import Fault, GeminiEmulator, JobPlan
from kb.testing.gemini_emulator.state import TOO_MANY_ITEMS
from tests.support.settings import EMULATOR_KEY as KEY

MODEL = "gemini-embedding-001"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def embed(
    client: genai.Client,
    texts: list[str],
    dims: int | None = None,
    task: str | None = None,
    model: str = MODEL,
) -> list[np.ndarray]:
    config = types.EmbedContentConfig(output_dimensionality=dims, task_type=task)
    response = client.models.embed_content(model=model, contents=texts, config=config)
    return [np.array(embedding.values) for embedding in response.embeddings or []]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def raw(
    emu: GeminiEmulator, method: str, path: str, body: Any = None, key: str | None = KEY
) -> tuple[int, dict[str, str], Any]:
    """A plain HTTP call (no SDK): status, headers, parsed JSON body (or text)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"x-goog-api-key": key} if key else {})}
    request = urllib.request.Request(emu.base_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, answer_headers, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, answer_headers, payload = error.code, dict(error.headers), error.read()
    try:
        return status, answer_headers, json.loads(payload) if payload else None
    except json.JSONDecodeError:
        return status, answer_headers, payload.decode()


# Embeddings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_embed_content_on_both_api_versions_logs_dims_and_task_types(
    emu: GeminiEmulator, api_version: str
) -> None:
    options = types.HttpOptions(base_url=emu.base_url, api_version=api_version)
    with genai.Client(api_key=KEY, http_options=options) as client:
        vectors = embed(client, ["alpha text", "beta text"], dims=768, task="RETRIEVAL_DOCUMENT")
    assert [len(vector) for vector in vectors] == [768, 768]
    (entry,) = emu.log
    assert entry.route == "batchEmbedContents" and entry.api_version == api_version and entry.status == 200
    assert entry.path == f"/{api_version}/models/{MODEL}:batchEmbedContents"
    assert entry.texts == ["alpha text", "beta text"] and entry.item_count == 2
    assert entry.dimensions == [768, 768] and entry.task_types == ["RETRIEVAL_DOCUMENT"] * 2
    assert entry.headers["x-goog-api-key"] == "REDACTED"
    assert KEY not in json.dumps([entry.headers, entry.query, entry.body])


def test_vectors_are_deterministic_text_dependent_and_normalised_only_at_full_size(
    client: genai.Client,
) -> None:
    first, second = embed(client, ["The cat sat on the mat", "A completely different sentence"], dims=768)
    again = embed(client, ["The cat sat on the mat"], dims=768)[0]
    assert np.array_equal(first, again)
    assert not np.allclose(first, second)
    assert abs(np.linalg.norm(first) - 1) > 0.1  # truncated vectors are not unit length, as live
    full = embed(client, ["The cat sat on the mat"])[0]
    assert len(full) == 3072 and np.linalg.norm(full) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(full[:768], first)  # a truncation is a prefix of the full vector
    cased = embed(client, ["The Cat sat on the mat"], dims=768)[0]
    assert not np.array_equal(cased, first) and cosine(cased, first) > 0.99  # never collide, still close


def test_vectors_are_crudely_semantic(client: genai.Client) -> None:
    query, paraphrase, unrelated = embed(
        client,
        [
            "How do I configure the database connection pool?",
            "Configuring connection pools for your database",
            "The weather in Paris was sunny and warm today",
        ],
        dims=768,
    )
    assert cosine(query, paraphrase) > 0.5 > cosine(query, unrelated) + 0.3
    as_query = embed(client, ["database connection pool"], dims=768, task="RETRIEVAL_QUERY")[0]
    as_document = embed(client, ["database connection pool"], dims=768, task="RETRIEVAL_DOCUMENT")[0]
    assert 0.99 < cosine(as_query, as_document) < 1.0  # one space, a tiny task-type perturbation


def test_ten_thousand_texts_embed_at_once() -> None:
    words = [
        f"{stem}{suffix}"
        for stem in ("vector", "index", "query", "batch", "token")
        for suffix in "abcdefghij"
    ]
    texts = [
        " ".join(words[(index * 7 + step * 13) % 50] for step in range(70))[:500] for index in range(10_000)
    ]
    emulator = GeminiEmulator()  # no server needed
    vectors = emulator.vectors(texts, dimensions=768)
    assert len(vectors) == 10_000 and vectors[0].shape == (768,)


def test_models_have_separate_vector_spaces(client: genai.Client) -> None:
    text = "Vectors of two models must not be comparable"
    old = embed(client, [text], dims=768)[0]
    new = embed(client, [text], dims=768, model="text-embedding-004")[0]
    assert abs(cosine(old, new)) < 0.2
    assert np.linalg.norm(new) == pytest.approx(1.0, abs=1e-6)  # 768 is text-embedding-004's native size


def test_more_than_100_items_is_the_live_400(emu: GeminiEmulator, client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as raised:
        embed(client, [f"text {index}" for index in range(101)])
    assert raised.value.code == 400 and raised.value.status == "INVALID_ARGUMENT"
    assert raised.value.message == TOO_MANY_ITEMS
    assert emu.log[-1].item_count == 101 and emu.log[-1].status == 400
    assert emu.embedded_texts() == []


def test_payload_over_4_mib_is_rejected(client: genai.Client) -> None:
    texts = ["word " * 9000] * 95  # ~4.3 MB of JSON
    with pytest.raises(errors.ClientError) as raised:
        embed(client, texts)
    assert raised.value.message == "Request payload size exceeds the limit: 4194304 bytes."


def test_dimensions_task_types_and_token_limit_are_validated(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    with pytest.raises(errors.ClientError, match="between 1 and 3072"):
        embed(client, ["x"], dims=4000)
    with pytest.raises(errors.ClientError, match="TaskType"):
        embed(client, ["x"], task="NOT_A_TASK")
    long_text = "tokenise " * 2100  # 2 tokens per word
    assert emu.count_tokens(long_text) == 4200
    with pytest.raises(errors.ClientError, match=r"input token count \(4200\) exceeds .* \(2048\)"):
        embed(client, [long_text])
    emu.truncate_long_inputs = True
    assert len(embed(client, [long_text], dims=128)[0]) == 128
    assert emu.billed_tokens() == 2048


def test_raw_rest_accepts_snake_case_and_embed_content(emu: GeminiEmulator) -> None:
    request = {
        "content": {"parts": [{"text": "snake case"}]},
        "task_type": "RETRIEVAL_QUERY",
        "output_dimensionality": "256",
    }
    status, _, body = raw(emu, "POST", f"/v1beta/models/{MODEL}:embedContent", request)
    assert status == 200 and len(body["embedding"]["values"]) == 256
    assert emu.log[-1].task_types == ["RETRIEVAL_QUERY"] and emu.log[-1].dimensions == [256]
    status, _, body = raw(emu, "POST", f"/v1/models/{MODEL}:batchEmbedContents", {"requests": [{"bogus": 1}]})
    assert status == 400 and 'Unknown name "bogus"' in body["error"]["message"]


def test_count_tokens_uses_the_emulator_counter(emu: GeminiEmulator, client: genai.Client) -> None:
    contents = ["Hello, world!", "internationalisation café"]
    response = client.models.count_tokens(model=MODEL, contents=contents)
    assert response.total_tokens == sum(emu.count_tokens(text) for text in contents) == 4 + 4 + 2
    assert emu.log[-1].route == "countTokens" and emu.log[-1].texts == contents
    assert emu.billed_tokens() == 0  # counting is free


# Auth and models ------------------------------------------------------------------------------------------


def test_wrong_key_is_400_api_key_invalid_and_missing_key_403(emu: GeminiEmulator) -> None:
    options = types.HttpOptions(base_url=emu.base_url)
    with (
        genai.Client(api_key="wrong", http_options=options) as client,
        pytest.raises(errors.ClientError) as raised,
    ):
        embed(client, ["x"])
    assert (
        raised.value.code == 400 and raised.value.message == "API key not valid. Please pass a valid API key."
    )
    assert raised.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    status, _, body = raw(emu, "POST", f"/v1/models/{MODEL}:batchEmbedContents", {"requests": []}, key=None)
    assert status == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    status, _, _ = raw(emu, "POST", f"/v1/models/{MODEL}:countTokens?key={KEY}", {"contents": []}, key=None)
    assert status == 200
    assert all("wrong" not in json.dumps(entry.headers) and KEY not in str(entry.query) for entry in emu.log)


def test_unknown_and_shut_down_models_are_404(emu: GeminiEmulator, client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as raised:
        embed(client, ["x"], model="no-such-model")
    assert raised.value.code == 404 and raised.value.status == "NOT_FOUND"
    assert raised.value.message.startswith("models/no-such-model is not found for API version v1,")
    assert len(embed(client, ["built before the shutdown"], model="text-embedding-004")[0]) == 768
    emu.models.shut_down("text-embedding-004")
    with pytest.raises(errors.ClientError, match="models/text-embedding-004 is not found"):
        embed(client, ["x"], model="text-embedding-004")
    assert [model.name for model in client.models.list()] == [
        "models/gemini-embedding-001",
        "models/gemini-embedding-2",
        "models/gemini-2.5-flash-lite",
        "models/gemini-2.5-flash",
    ]


def test_added_models_follow_their_rules(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.models.add("my-embedder", batch=False, default_dims=256)
    vector = embed(client, ["custom model"], model="my-embedder")[0]
    assert len(vector) == 256 and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(errors.ClientError, match="between 1 and 256"):
        embed(client, ["too wide"], dims=512, model="my-embedder")


# Files ----------------------------------------------------------------------------------------------------


def test_files_upload_get_list_delete(emu: GeminiEmulator, client: genai.Client, tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_text('{"key": "a", "request": {"content": {"parts": [{"text": "hi"}]}}}\n')
    uploaded = client.files.upload(file=path, config={"mime_type": "application/jsonl", "display_name": "in"})
    assert uploaded.name and uploaded.display_name == "in" and uploaded.size_bytes == path.stat().st_size
    assert uploaded.state == types.FileState.ACTIVE and uploaded.source == types.FileSource.UPLOADED
    assert uploaded.expiration_time and uploaded.create_time
    assert uploaded.expiration_time - uploaded.create_time == datetime.timedelta(hours=48)
    assert client.files.get(name=uploaded.name).sha256_hash == uploaded.sha256_hash
    start, chunk = emu.log[0], emu.log[1]
    assert start.headers["x-goog-api-key"] == "REDACTED" and "x-goog-api-key" not in chunk.headers
    named = client.files.upload(file=path, config={"mime_type": "application/jsonl", "name": "files/myinput"})
    assert named.name == "files/myinput"
    assert [file.name for file in client.files.list(config={"page_size": 1})] == [named.name, uploaded.name]
    with pytest.raises(errors.ClientError, match="Only generated files can be downloaded"):
        client.files.download(file=uploaded.name)
    client.files.delete(name=uploaded.name)
    with pytest.raises(errors.ClientError) as raised:
        client.files.get(name=uploaded.name)
    assert raised.value.code == 403  # files are project-scoped: unknown is PERMISSION_DENIED, as live
    emu.clock.advance(48 * 3600)
    assert list(client.files.list()) == []  # expired after 48 h


def test_large_upload_goes_in_8_mib_chunks(emu: GeminiEmulator, client: genai.Client, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * (9 * 1024 * 1024))
    uploaded = client.files.upload(file=path, config={"mime_type": "application/octet-stream"})
    assert uploaded.size_bytes == 9 * 1024 * 1024
    assert [entry.route for entry in emu.log] == ["files.upload"] * 3
    assert emu.stored_files()[0].data == path.read_bytes()


def test_batch_output_downloads_but_get_hits_the_live_40_character_limit(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    source = types.EmbeddingsBatchJobSource(file_name=_upload_lines(client, ["one", "two"]))
    with pytest.warns(errors.ExperimentalWarning):
        job = client.batches.create_embeddings(model=MODEL, src=source)
    finished = client.batches.get(name=job.name or "")
    assert finished.dest and finished.dest.file_name == f"files/batch-{(job.name or '').split('/')[1]}"
    lines = [json.loads(line) for line in client.files.download(file=finished.dest.file_name).splitlines()]
    assert [line["key"] for line in lines] == ["k0", "k1"]
    status, _, _ = raw(emu, "GET", f"/download/v1beta/{finished.dest.file_name}:download?alt=media")
    assert status == 200
    with pytest.raises(errors.ClientError, match="cannot be more than 40 characters"):
        client.files.get(name=finished.dest.file_name)
    emu.clock.advance(48 * 3600)
    with pytest.raises(errors.ClientError) as expired:
        client.files.download(file=finished.dest.file_name)
    assert expired.value.code == 404


def _upload_lines(client: genai.Client, texts: list[str]) -> str:
    lines = [
        {"key": f"k{index}", "request": {"content": {"parts": [{"text": text}]}}}
        for index, text in enumerate(texts)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = client.files.upload(file=io.BytesIO(data), config={"mime_type": "application/jsonl"})
    return uploaded.name or ""


# Faults ---------------------------------------------------------------------------------------------------


def test_429_carries_retry_info_and_retry_after(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.faults.add(Fault(route="batchEmbedContents", status=429, times=1, retry_delay="2s"))
    with pytest.raises(errors.ClientError) as raised:
        embed(client, ["rate limited"])
    assert raised.value.code == 429 and raised.value.status == "RESOURCE_EXHAUSTED"
    details = raised.value.details["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"} in details
    assert emu.log[-1].status == 429 and emu.log[-1].texts == ["rate limited"]
    assert emu.embedded_texts() == []  # faulted calls are not billed
    emu.faults.add(Fault(route="countTokens", status=429, retry_delay="3s"))
    status, headers, _ = raw(emu, "POST", f"/v1/models/{MODEL}:countTokens", {"contents": []})
    assert status == 429 and headers["Retry-After"] == "3"
    assert len(embed(client, ["fine again"])) == 1


@pytest.mark.parametrize(
    ("status", "canonical"), [(500, "INTERNAL"), (503, "UNAVAILABLE"), (504, "DEADLINE_EXCEEDED")]
)
def test_server_errors_raise_server_error(
    client: genai.Client, emu: GeminiEmulator, status: int, canonical: str
) -> None:
    emu.faults.add(Fault(route="*", status=status))
    with pytest.raises(errors.ServerError) as raised:
        embed(client, ["x"])
    assert raised.value.code == status and raised.value.status == canonical


def test_html_502_is_a_server_error_with_the_reason_phrase(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.faults.add(Fault(route="batchEmbedContents", status=502, html_body=True))
    with pytest.raises(errors.ServerError) as raised:
        embed(client, ["x"])
    assert raised.value.code == 502 and raised.value.status == "Bad Gateway"
    assert "<title>Error 502 (Server Error)!!1</title>" in raised.value.message


def test_times_after_and_model_decide_which_calls_fail(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.faults.add(Fault(route="batchEmbedContents", status=503, after=1, times=2, model=MODEL))
    outcomes = []
    for _ in range(4):
        try:
            embed(client, ["x"])
            outcomes.append(200)
        except errors.APIError as error:
            outcomes.append(error.code)
    assert outcomes == [200, 503, 503, 200]
    emu.faults.add(Fault(route="batchEmbedContents", status=500, model="text-embedding-004", times=None))
    assert len(embed(client, ["other models pass"])) == 1
    assert [fault.fired for fault in emu.faults.all()] == [2, 0]


def test_sdk_retries_recover_from_scripted_429s(emu: GeminiEmulator) -> None:
    emu.faults.add(Fault(route="batchEmbedContents", status=429, times=2))
    retry = types.HttpRetryOptions(attempts=3, initial_delay=0.01, max_delay=0.01, jitter=0)
    options = types.HttpOptions(base_url=emu.base_url, retry_options=retry)
    with genai.Client(api_key=KEY, http_options=options) as client:
        assert len(embed(client, ["eventually"])) == 1
    assert [entry.status for entry in emu.log] == [429, 429, 200]
    assert emu.embedded_texts() == [(MODEL, "online", "eventually")]


def test_latency_delays_and_times_out_the_client(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.faults.add(Fault(route="batchEmbedContents", status=200, latency_s=0.3))
    started = time.monotonic()
    assert len(embed(client, ["slow"])) == 1
    assert time.monotonic() - started >= 0.3
    emu.faults.add(Fault(route="batchEmbedContents", status=200, latency_s=0.5))
    options = types.HttpOptions(base_url=emu.base_url, timeout=100)  # milliseconds
    with genai.Client(api_key=KEY, http_options=options) as impatient, pytest.raises(httpx2.TimeoutException):
        embed(impatient, ["too slow"])


def test_disconnect_and_garbage_200(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.faults.add(Fault(route="batchEmbedContents", disconnect=True))
    with pytest.raises(httpx2.RemoteProtocolError):
        embed(client, ["x"])
    emu.faults.add(Fault(route="batchEmbedContents", status=200, html_body="{not json"))
    with pytest.raises(json.JSONDecodeError):
        embed(client, ["x"])


def test_per_minute_quotas_run_on_the_emulated_clock(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.settings.requests_per_minute = 2
    embed(client, ["one"])
    embed(client, ["two"])
    with pytest.raises(errors.ClientError) as raised:
        embed(client, ["three"])
    assert raised.value.code == 429
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "60s"} in raised.value.details[
        "error"
    ]["details"]
    emu.clock.advance(60)
    embed(client, ["three"])
    emu.settings.requests_per_minute, emu.settings.tokens_per_minute = None, 5
    emu.clock.advance(60)
    embed(client, ["a b c d"])
    with pytest.raises(errors.ClientError):
        embed(client, ["e f"])
    assert [text for _, _, text in emu.embedded_texts()] == ["one", "two", "three", "a b c d"]


# Billing, control API, standalone -------------------------------------------------------------------------


def test_billing_counts_only_delivered_embeddings(emu: GeminiEmulator, client: genai.Client) -> None:
    embed(client, ["online one", "online two"], dims=768)
    emu.faults.add(Fault(route="batchEmbedContents", status=500))
    with pytest.raises(errors.ServerError):
        embed(client, ["faulted"])
    assert emu.embedded_texts() == [(MODEL, "online", "online one"), (MODEL, "online", "online two")]
    assert emu.billed_tokens() == emu.count_tokens("online one") + emu.count_tokens("online two")
    assert emu.billed_tokens(mode="batch") == 0 and emu.billed_tokens(model="text-embedding-004") == 0


def test_control_endpoints_over_plain_http(emu: GeminiEmulator, client: genai.Client) -> None:
    embed(client, ["logged"])
    status, _, log = raw(emu, "GET", "/__emulator/log", key=None)
    assert status == 200 and log["requests"][0]["texts"] == ["logged"]
    assert log["requests"][0]["headers"]["x-goog-api-key"] == "REDACTED"
    status, _, _ = raw(
        emu, "POST", "/__emulator/faults", {"route": "batchEmbedContents", "status": 503}, key=None
    )
    assert status == 200
    with pytest.raises(errors.ServerError):
        embed(client, ["faulted"])
    status, _, bad = raw(emu, "POST", "/__emulator/faults", {"route": "nope"}, key=None)
    assert status == 400 and "unknown route" in bad["error"]["message"]
    before = emu.clock.now()
    status, _, clock = raw(emu, "POST", "/__emulator/clock", {"advance": 90}, key=None)
    assert clock["now"] == before + 90 == emu.clock.now()
    plan = {"pending_s": 5, "error_texts_containing": "BAD", "code": 8, "message": "quota"}
    assert raw(emu, "POST", "/__emulator/job_plan", plan, key=None)[0] == 200
    assert emu.job_plan.pending_s == 5 and emu.job_plan.item_errors is not None
    assert emu.job_plan.item_errors("a BAD text") == (8, "quota") and emu.job_plan.item_errors("fine") is None
    status, _, billing = raw(emu, "GET", "/__emulator/billing", key=None)
    assert billing["tokens"] == {MODEL: {"online": emu.count_tokens("logged")}}
    assert [record["text"] for record in billing["records"]] == ["logged"]
    assert all(entry.route != "unknown" for entry in emu.log)  # control calls are not logged


def test_unknown_routes_and_versions_are_404(emu: GeminiEmulator) -> None:
    assert raw(emu, "GET", "/v1/tunedModels")[0] == 404
    assert raw(emu, "GET", "/v2/models")[0] == 404
    assert raw(emu, "GET", "/proxy/gemini/v1/models")[0] == 200  # a base_url with a path prefix
    assert emu.log[0].route == "unknown" and emu.log[0].status == 404


def test_job_plan_can_be_set_in_process(emu: GeminiEmulator) -> None:
    emu.job_plan = JobPlan(pending_s=1)
    assert emu.job_plan.pending_s == 1
    with pytest.raises(ValueError, match="outcome"):
        JobPlan(outcome="DONE")


def test_standalone_entry_point_serves_until_interrupted() -> None:
    command = [sys.executable, "-m", "kb.testing.gemini_emulator", "--port", "0", "--api-key", KEY]
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        with genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=base_url)) as client:
            response = client.models.embed_content(model=MODEL, contents="standalone")
        assert response.embeddings and len(response.embeddings[0].values or []) == 3072
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
    assert process.returncode == 0


# Issue 20: what the live service does that the emulator did not -------------------------------------------


def test_gemini_embedding_2_normalises_truncated_vectors_and_tiny_sizes_are_served(
    client: genai.Client,
) -> None:
    """Google's embeddings page: gemini-embedding-2 vectors are normalised at every size, -001's only at
    3072; the live batch run in the cookbook accepted output_dimensionality 3 and 4."""
    [two] = embed(client, ["The cat sat on the mat"], dims=768, model="gemini-embedding-2")
    assert len(two) == 768 and np.linalg.norm(two) == pytest.approx(1.0, abs=1e-6)
    [one] = embed(client, ["The cat sat on the mat"], dims=768)
    assert abs(np.linalg.norm(one) - 1) > 0.1
    assert len(embed(client, ["tiny"], dims=3)[0]) == 3
    assert len(embed(client, ["tiny"], dims=4, model="gemini-embedding-2")[0]) == 4


def test_quirk_faults_answer_oddly_where_the_live_service_does(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.faults.add(Fault(route="files.upload", status=200, quirk="upload_without_file"))
    with pytest.raises(KeyError, match="file"):
        client.files.upload(file=io.BytesIO(b"{}\n"), config={"mime_type": "application/jsonl"})
    emu.faults.add(Fault(route="files.upload", status=200, quirk="upload_not_final"))
    with pytest.raises(ValueError, match="not finalized"):
        client.files.upload(file=io.BytesIO(b"{}\n"), config={"mime_type": "application/jsonl"})
    assert len(emu.stored_files()) == 2  # both were stored: the answers only hid it
    emu.faults.add(Fault(route="files.list", status=200, quirk="empty_page", times=2))
    with pytest.raises(IndexError):  # the SDK's pager, on two empty pages that carry a token
        list(client.files.list(config={"page_size": 1}))
    assert len(list(client.files.list(config={"page_size": 1}))) == 2  # spent: normal pages again


def test_a_fault_can_last_a_span_of_emulated_time(emu: GeminiEmulator, client: genai.Client) -> None:
    fault = emu.faults.add(Fault(route="models.get", status=403, times=None, for_s=60.0))
    for _ in range(3):
        with pytest.raises(errors.ClientError):
            client.models.get(model=MODEL)
    emu.clock.advance(61)
    assert client.models.get(model=MODEL).name == f"models/{MODEL}"
    assert fault.fired == 3
