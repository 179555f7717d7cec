"""The Gemini emulator's batch jobs through the real SDK: lifecycle on the emulated clock, outputs, faults."""

import io
import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pydantic
import pytest
from google import genai
from google.genai import errors, types

from kb.testing.gemini_emulator import GeminiEmulator, JobPlan, TextsContaining
from tests.support.settings import EMULATOR_KEY as KEY

pytestmark = pytest.mark.filterwarnings("ignore::google.genai.errors.ExperimentalWarning")

MODEL = "gemini-embedding-001"
HOUR = 3600.0


def upload_requests(client: genai.Client, texts: list[str], dims: int | None = 768) -> str:
    """A JSONL input file with keys k0, k1, ...; returns its name."""
    lines = []
    for index, text in enumerate(texts):
        request: dict[str, Any] = {"content": {"parts": [{"text": text}]}, "task_type": "RETRIEVAL_DOCUMENT"}
        if dims is not None:
            request["output_dimensionality"] = dims
        lines.append(json.dumps({"key": f"k{index}", "request": request}))
    data = io.BytesIO(("\n".join(lines) + "\n").encode())
    return client.files.upload(file=data, config={"mime_type": "application/jsonl"}).name or ""


def file_job(client: genai.Client, texts: list[str], dims: int | None = 768) -> types.BatchJob:
    source = types.EmbeddingsBatchJobSource(file_name=upload_requests(client, texts, dims))
    return client.batches.create_embeddings(model=MODEL, src=source)


def inline_job(client: genai.Client, texts: list[str], model: str = MODEL) -> types.BatchJob:
    batch = types.EmbedContentBatch(
        contents=texts, config=types.EmbedContentConfig(output_dimensionality=768)
    )
    return client.batches.create_embeddings(
        model=model, src=types.EmbeddingsBatchJobSource(inlined_requests=batch)
    )


def state_of(client: genai.Client, job: types.BatchJob) -> str:
    state = client.batches.get(name=job.name or "").state
    return state.value if state else ""


def output_lines(client: genai.Client, job: types.BatchJob) -> list[dict[str, Any]]:
    finished = client.batches.get(name=job.name or "")
    assert finished.dest and finished.dest.file_name
    return [json.loads(line) for line in client.files.download(file=finished.dest.file_name).splitlines()]


def raw(emu: GeminiEmulator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": "application/json", "x-goog-api-key": KEY}
    request = urllib.request.Request(emu.base_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


# Lifecycle and outputs ------------------------------------------------------------------------------------


def test_file_mode_runs_on_the_emulated_clock_and_joins_by_key(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.job_plan = JobPlan(pending_s=60, running_s=300)
    texts = ["first document", "second document", "third one"]
    job = file_job(client, texts)
    assert (
        job.state == types.JobState.JOB_STATE_PENDING and job.name and len(job.name) == len("batches/") + 36
    )
    assert emu.log[-1].route == "asyncBatchEmbedContent" and emu.log[-1].texts == texts
    assert state_of(client, job) == "JOB_STATE_PENDING"
    emu.clock.advance(60)
    assert state_of(client, job) == "JOB_STATE_RUNNING"
    assert emu.embedded_texts() == []  # nothing is billed before the job succeeds
    emu.clock.advance(300)
    finished = client.batches.get(name=job.name)
    assert finished.state == types.JobState.JOB_STATE_SUCCEEDED and finished.end_time and finished.create_time
    assert (finished.end_time - finished.create_time).total_seconds() == 360
    by_key = {line["key"]: line["response"] for line in output_lines(client, job)}
    assert set(by_key) == {"k0", "k1", "k2"}
    assert by_key["k2"]["tokenCount"] == str(emu.count_tokens("third one"))
    online = emu.vector("third one", dimensions=768, task_type="RETRIEVAL_DOCUMENT")
    assert np.array_equal(np.array(by_key["k2"]["embedding"]["values"]), online)
    assert emu.embedded_texts(mode="batch") == [(MODEL, "batch", text) for text in texts]
    assert emu.billed_tokens(mode="batch") == sum(emu.count_tokens(text) for text in texts)


def test_inline_mode_results_are_in_metadata_output_and_response(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.job_plan = JobPlan(pending_s=10, running_s=10)
    job = inline_job(client, ["alpha", "beta"])
    emu.clock.advance(15)
    assert state_of(client, job) == "JOB_STATE_RUNNING"
    emu.clock.advance(5)
    finished = client.batches.get(name=job.name or "")
    assert finished.dest and finished.dest.inlined_embed_content_responses
    responses = [item.response for item in finished.dest.inlined_embed_content_responses]
    assert [
        len(response.embedding.values or []) for response in responses if response and response.embedding
    ] == [
        768,
        768,
    ]
    status, operation = raw(emu, "GET", f"/v1beta/{job.name}")
    assert status == 200 and operation["done"] is True
    metadata = operation["metadata"]
    assert metadata["state"] == "BATCH_STATE_SUCCEEDED" and metadata["model"] == f"models/{MODEL}"
    assert metadata["batchStats"] == {"requestCount": "2", "successfulRequestCount": "2"}
    assert metadata["output"]["inlinedResponses"] == operation["response"]["inlinedResponses"]
    assert metadata["output"]["inlinedResponses"]["inlinedResponses"][0]["response"]["tokenCount"] == "1"


@pytest.mark.parametrize(
    ("outcome", "state", "error_code"),
    [
        ("FAILED", "BATCH_STATE_FAILED", 13),
        ("EXPIRED", "BATCH_STATE_EXPIRED", None),
        ("CANCELLED", "BATCH_STATE_CANCELLED", 1),
    ],
)
def test_terminal_outcomes_on_the_wire(
    emu: GeminiEmulator, client: genai.Client, outcome: str, state: str, error_code: int | None
) -> None:
    emu.plan_next_jobs([JobPlan(running_s=30, outcome=outcome)])
    job = inline_job(client, ["doomed"])
    emu.clock.advance(30)
    assert state_of(client, job) == state.replace("BATCH_STATE", "JOB_STATE")
    _, operation = raw(emu, "GET", f"/v1/{job.name}")
    assert operation["done"] is True and "output" not in operation["metadata"] and "response" not in operation
    assert operation.get("error", {}).get("code") == error_code
    assert emu.embedded_texts() == []
    later = inline_job(client, ["the next job uses the default plan"])
    assert state_of(client, later) == "JOB_STATE_SUCCEEDED"


def test_stuck_jobs_expire_after_48_hours(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.job_plan = JobPlan(pending_s=HOUR, outcome="STUCK")
    job = inline_job(client, ["never done"])
    emu.clock.advance(48 * HOUR - 1)
    assert state_of(client, job) == "JOB_STATE_RUNNING"
    emu.clock.advance(1)
    assert state_of(client, job) == "JOB_STATE_EXPIRED"
    assert emu.job(job.name or "").end_time == emu.job(job.name or "").create_time + 48 * HOUR


def test_cancel_and_delete(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.job_plan = JobPlan(pending_s=HOUR)
    job = inline_job(client, ["cancel me"])
    client.batches.cancel(name=job.name or "")
    assert state_of(client, job) == "JOB_STATE_CANCELLED"
    with pytest.raises(errors.ClientError) as raised:
        client.batches.cancel(name=job.name or "")
    assert raised.value.code == 400 and raised.value.status == "FAILED_PRECONDITION"
    client.batches.delete(name=job.name or "")
    with pytest.raises(errors.ClientError) as missing:
        client.batches.get(name=job.name or "")
    assert missing.value.code == 404
    assert list(client.batches.list()) == [] and emu.jobs() == []


def test_list_pages_newest_first_without_outputs(emu: GeminiEmulator, client: genai.Client) -> None:
    names = []
    for index in range(5):
        names.append(inline_job(client, [f"job {index}"]).name)
        emu.clock.advance(1)
    listed = [job.name for job in client.batches.list(config={"page_size": 2})]
    assert listed == names[::-1]
    assert [entry.route for entry in emu.log].count("batches.list") == 3
    status, page = raw(emu, "GET", "/v1/batches?pageSize=2")
    assert status == 200 and len(page["operations"]) == 2 and page["nextPageToken"]
    assert all(
        "output" not in operation["metadata"] and "response" not in operation
        for operation in page["operations"]
    )


def test_shuffled_dropped_and_failed_items(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.job_plan = JobPlan(
        shuffle=True, drop_fraction=0.25, item_errors=TextsContaining("POISON", 8, "quota"), seed=3
    )
    texts = [f"text number {index}" for index in range(6)] + ["POISON pill", "another POISON"]
    job = file_job(client, texts)
    lines = output_lines(client, job)
    keys = [line["key"] for line in lines]
    assert len(lines) == 6 and keys != sorted(
        keys, key=lambda key: int(key[1:])
    )  # two dropped, order scrambled
    errors_by_key = {line["key"]: line["error"] for line in lines if "error" in line}
    assert all(error == {"code": 8, "message": "quota"} for error in errors_by_key.values())
    assert {texts[int(key[1:])] for key in errors_by_key} <= {"POISON pill", "another POISON"}
    billed = [text for _, _, text in emu.embedded_texts()]
    assert sorted(billed) == sorted(texts[int(line["key"][1:])] for line in lines if "response" in line)
    _, operation = raw(emu, "GET", f"/v1/{job.name}")
    assert operation["metadata"]["batchStats"] == {
        "requestCount": "8",
        "successfulRequestCount": "6",
        "failedRequestCount": "2",
    }


def test_unreadable_lines_and_bad_requests_fail_their_line_only(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    data = b'{"key": "ok", "request": {"content": {"parts": [{"text": "fine"}]}}}\nnot json\n'
    data += (
        b'{"key": "wide", "request": {"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 9999}}\n'
    )
    name = client.files.upload(file=io.BytesIO(data), config={"mime_type": "application/jsonl"}).name or ""
    job = client.batches.create_embeddings(model=MODEL, src=types.EmbeddingsBatchJobSource(file_name=name))
    lines = output_lines(client, job)
    assert "response" in lines[0] and lines[1]["error"]["code"] == 3 and "key" not in lines[1]
    assert lines[2]["key"] == "wide" and "between 1 and 3072" in lines[2]["error"]["message"]


def test_all_errors_land_in_inlined_responses_as_with_the_real_sdk(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.job_plan = JobPlan(item_errors=lambda text: (13, "internal"))
    finished = client.batches.get(name=inline_job(client, ["a", "b"]).name or "")
    assert finished.dest and finished.dest.inlined_embed_content_responses is None
    assert finished.dest.inlined_responses and len(finished.dest.inlined_responses) == 2


def test_inline_metadata_is_echoed_for_raw_rest_clients(emu: GeminiEmulator) -> None:
    requests = [
        {"request": {"content": {"parts": [{"text": t}]}}, "metadata": {"key": t}} for t in ("x", "y")
    ]
    body = {"batch": {"displayName": "raw", "inputConfig": {"requests": {"requests": requests}}}}
    status, operation = raw(emu, "POST", f"/v1beta/models/{MODEL}:asyncBatchEmbedContent", body)
    assert status == 200 and operation["metadata"]["displayName"] == "raw" and "done" not in operation
    assert operation["metadata"]["batchStats"] == {"requestCount": "2", "pendingRequestCount": "2"}
    _, finished = raw(emu, "GET", f"/v1beta/{operation['name']}")
    items = finished["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert [item["metadata"] for item in items] == [{"key": "x"}, {"key": "y"}]


def test_item_error_details_objects_trip_the_sdk_as_live(emu: GeminiEmulator, client: genai.Client) -> None:
    bad_request = {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": []}
    emu.job_plan = JobPlan(item_errors=TextsContaining("BAD"), item_error_details=(bad_request,))
    job = inline_job(client, ["fine", "BAD input"])
    with pytest.raises(pydantic.ValidationError):
        client.batches.get(name=job.name or "")


# Refusals and failures ------------------------------------------------------------------------------------


def test_text_embedding_004_is_refused_for_batch(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as raised:
        inline_job(client, ["x"], model="text-embedding-004")
    assert raised.value.code == 400 and "does not support batch" in raised.value.message


def test_request_count_and_size_limits(emu: GeminiEmulator) -> None:
    requests = [{"request": {"content": {"parts": [{"text": "t"}]}}}] * 10_001
    body = {"batch": {"inputConfig": {"requests": {"requests": requests}}}}
    status, answer = raw(emu, "POST", f"/v1/models/{MODEL}:asyncBatchEmbedContent", body)
    assert status == 400 and "at most 10000 requests" in answer["error"]["message"]
    huge = {
        "batch": {
            "inputConfig": {
                "requests": {"requests": [{"request": {"content": {"parts": [{"text": "x" * 21_000_000}]}}}]}
            }
        }
    }
    status, answer = raw(emu, "POST", f"/v1/models/{MODEL}:asyncBatchEmbedContent", huge)
    assert (
        status == 400
        and answer["error"]["message"] == "Request payload size exceeds the limit: 20971520 bytes."
    )
    emu.settings.max_concurrent_batches = 1
    emu.job_plan = JobPlan(pending_s=HOUR)
    small = {"batch": {"inputConfig": {"requests": {"requests": requests[:1]}}}}
    assert raw(emu, "POST", f"/v1/models/{MODEL}:asyncBatchEmbedContent", small)[0] == 200
    assert raw(emu, "POST", f"/v1/models/{MODEL}:asyncBatchEmbedContent", small)[0] == 429


def test_enqueued_token_budget_limits_live_jobs(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.settings.batch_enqueued_tokens = 5
    emu.job_plan = JobPlan(pending_s=HOUR)
    inline_job(client, ["a b c"])
    with pytest.raises(errors.ClientError) as raised:
        inline_job(client, ["d e f"])
    assert raised.value.code == 429 and "Enqueued tokens limit" in raised.value.message
    emu.clock.advance(HOUR)  # the first job is done, its tokens leave the queue
    assert inline_job(client, ["d e f"]).state == types.JobState.JOB_STATE_PENDING


def test_input_file_deleted_before_the_start_fails_the_job(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.job_plan = JobPlan(pending_s=HOUR)
    job = file_job(client, ["orphan"])
    client.files.delete(name=emu.job(job.name or "").input_file or "")
    emu.clock.advance(HOUR)
    assert state_of(client, job) == "JOB_STATE_FAILED"
    input_file = emu.job(job.name or "").input_file
    message = f"The input file {input_file} was deleted or expired before the batch started."
    assert emu.job(job.name or "").error == (5, message)


def test_model_shut_down_while_pending_fails_the_job(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.models.add("short-lived", default_dims=768)
    emu.job_plan = JobPlan(pending_s=HOUR)
    job = inline_job(client, ["too late"], model="short-lived")
    emu.models.shut_down("short-lived")
    emu.clock.advance(HOUR)
    assert state_of(client, job) == "JOB_STATE_FAILED"


def test_force_state_and_unknown_states(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.job_plan = JobPlan(pending_s=HOUR)
    job = inline_job(client, ["forced"])
    emu.force_state(job.name or "", "BATCH_STATE_RUNNING")
    emu.clock.advance(2 * HOUR)
    assert state_of(client, job) == "JOB_STATE_RUNNING"  # pinned: the plan no longer applies
    emu.force_state(job.name or "", "SUCCEEDED")
    assert state_of(client, job) == "JOB_STATE_SUCCEEDED" and emu.embedded_texts() == [
        (MODEL, "batch", "forced")
    ]
    emu.force_state(job.name or "", "BATCH_STATE_SOMETHING_NEW")
    with pytest.warns(UserWarning, match="BATCH_STATE_SOMETHING_NEW is not a valid JobState"):
        client.batches.get(name=job.name or "")
    status, _ = raw(emu, "POST", "/__emulator/force_state", {"name": job.name, "state": "FAILED"})
    assert status == 200 and emu.jobs()[0].state == "BATCH_STATE_FAILED"
