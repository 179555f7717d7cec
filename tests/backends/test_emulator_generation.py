"""The Gemini emulator's text generation through the real SDK: generateContent and batchGenerateContent."""

import io
import json
from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from kb.testing.gemini_emulator import Fault, GeminiEmulator, JobPlan, TextsContaining

MODEL = "gemini-2.5-flash-lite"
PROMPT = (
    "<document>\nTitle: Install guide\n# Install\nlong text\n</document>\n"
    "<chunk>\n## Linux\nRun the script.\n### Debian\napt install kb\n</chunk>\n"
    "Give a short context for the chunk."
)


def generate(client: genai.Client, prompt: str, max_tokens: int = 200, model: str = MODEL) -> Any:
    config = types.GenerateContentConfig(max_output_tokens=max_tokens)
    return client.models.generate_content(model=model, contents=prompt, config=config)


def upload_prompts(client: genai.Client, prompts: list[str], max_tokens: int = 200) -> str:
    lines = [
        json.dumps(
            {
                "key": f"k{index}",
                "request": {
                    "contents": [{"parts": [{"text": prompt}], "role": "user"}],
                    "generationConfig": {"maxOutputTokens": max_tokens},
                },
            }
        )
        for index, prompt in enumerate(prompts)
    ]
    data = io.BytesIO(("\n".join(lines) + "\n").encode())
    return client.files.upload(file=data, config={"mime_type": "jsonl"}).name or ""


def result_lines(client: genai.Client, name: str) -> dict[str, dict[str, Any]]:
    finished = client.batches.get(name=name)
    assert finished.dest and finished.dest.file_name
    lines = [json.loads(line) for line in client.files.download(file=finished.dest.file_name).splitlines()]
    return {line["key"]: line for line in lines}


def test_the_model_answers_a_title_and_the_chunks_headings(emu: GeminiEmulator, client: genai.Client) -> None:
    response = generate(client, PROMPT)
    assert response.text == "Context: Install guide\n## Linux\n### Debian"
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage.prompt_token_count == emu.count_tokens(PROMPT)
    assert usage.candidates_token_count == emu.count_tokens(response.text)
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert response.model_version == MODEL
    [billed] = emu.generations()
    assert billed.mode == "online" and billed.output == response.text
    assert (billed.tokens, billed.output_tokens) == (usage.prompt_token_count, usage.candidates_token_count)
    assert emu.log[-1].route == "generateContent" and emu.log[-1].texts == [PROMPT]


def test_without_a_title_the_model_answers_the_first_12_words(client: genai.Client) -> None:
    words = " ".join(f"w{n}" for n in range(20))
    assert generate(client, words).text == " ".join(f"w{n}" for n in range(12))


def test_output_is_cut_at_max_output_tokens(client: genai.Client) -> None:
    response = generate(client, PROMPT, max_tokens=3)
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata.candidates_token_count <= 3


def test_blocked_prompts_and_safety_stops_carry_no_text(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.settings.blocked_prompts_containing = "BLOCK"
    emu.settings.safety_stops_containing = "UNSAFE"
    blocked = generate(client, "BLOCK this")
    assert blocked.candidates is None and blocked.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    stopped = generate(client, "UNSAFE words")
    assert stopped.candidates[0].finish_reason == types.FinishReason.SAFETY and stopped.text is None


def test_faults_and_model_kinds(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.faults.add(Fault(route="generateContent", status=429, retry_delay="3s"))
    with pytest.raises(errors.ClientError) as raised:
        generate(client, "hello")
    assert raised.value.code == 429
    assert generate(client, "hello").text == "hello"
    with pytest.raises(errors.ClientError, match="not supported for generateContent"):
        generate(client, "hello", model="gemini-embedding-001")
    with pytest.raises(errors.ClientError, match="not supported for embedContent"):
        client.models.embed_content(model=MODEL, contents="x")
    assert len(emu.generations()) == 1  # a refused call is not billed


def test_models_list_the_generation_methods(client: genai.Client) -> None:
    model = client.models.get(model=MODEL)
    assert model.supported_actions == ["generateContent", "countTokens", "batchGenerateContent"]
    assert model.input_token_limit == 1_048_576 and model.output_token_limit == 65_536


def test_a_file_batch_answers_per_key_on_the_emulated_clock(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    emu.job_plan = JobPlan(pending_s=60, running_s=60, shuffle=True, item_errors=TextsContaining("FAIL"))
    prompts = [PROMPT, "just some words", "FAIL here"]
    job = client.batches.create(
        model=MODEL, src=upload_prompts(client, prompts), config={"display_name": "g1"}
    )
    assert emu.log[-1].body == {
        "batch": {"inputConfig": {"fileName": emu.stored_files()[0].name}, "displayName": "g1"}
    }
    assert job.state == types.JobState.JOB_STATE_PENDING and job.display_name == "g1"
    assert emu.job(job.name or "").work == "generate"
    emu.clock.advance(121)
    lines = result_lines(client, job.name or "")
    assert lines["k0"]["response"]["candidates"][0]["content"]["parts"][0]["text"] == emu.generated_text(
        PROMPT
    )
    assert lines["k1"]["response"]["usageMetadata"]["promptTokenCount"] == emu.count_tokens("just some words")
    assert lines["k2"]["error"] == {"code": 3, "message": "Request contains an invalid argument."}
    assert [record.text for record in emu.generations(mode="batch")].count("FAIL here") == 0
    listed = [(j.display_name, j.state) for j in client.batches.list()]
    assert listed == [("g1", types.JobState.JOB_STATE_SUCCEEDED)]


def test_batch_operations_name_the_generate_content_batch_type(emu: GeminiEmulator) -> None:
    from tests.backends.test_emulator_batches import raw

    body = {
        "batch": {
            "inputConfig": {
                "requests": {"requests": [{"request": {"contents": [{"parts": [{"text": "a b"}]}]}}]}
            },
            "displayName": "inline",
        }
    }
    status, operation = raw(emu, "POST", f"/v1beta/models/{MODEL}:batchGenerateContent", body)
    assert status == 200
    assert operation["metadata"]["@type"] == (
        "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
    )
    status, done = raw(emu, "GET", f"/v1beta/{operation['name']}")
    [item] = done["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
    assert item["response"]["candidates"][0]["content"]["parts"][0]["text"] == "a b"
    assert done["response"]["@type"] == operation["metadata"]["@type"]


def test_unreadable_lines_and_unknown_caches_fail_their_line(
    emu: GeminiEmulator, client: genai.Client
) -> None:
    good = {"contents": [{"parts": [{"text": "fine"}]}]}
    cached = {**good, "cachedContent": "cachedContents/abc"}
    raw_lines = [
        json.dumps({"key": "good", "request": good}),
        json.dumps({"key": "bad", "request": {"contents": []}}),
        json.dumps({"key": "cached", "request": cached}),
    ]
    data = io.BytesIO(("\n".join(raw_lines) + "\n").encode())
    name = client.files.upload(file=data, config={"mime_type": "jsonl"}).name or ""
    job = client.batches.create(model=MODEL, src=name)
    lines = result_lines(client, job.name or "")
    assert "response" in lines["good"]
    assert lines["bad"]["error"]["code"] == 3 and "contents" in lines["bad"]["error"]["message"]
    assert lines["cached"]["error"]["code"] == 5


def test_a_failed_generation_batch_has_no_output(emu: GeminiEmulator, client: genai.Client) -> None:
    emu.job_plan = JobPlan(outcome="FAILED")
    job = client.batches.create(model=MODEL, src=upload_prompts(client, ["x"]))
    finished = client.batches.get(name=job.name or "")
    assert finished.state == types.JobState.JOB_STATE_FAILED and finished.dest is None
    assert emu.generations() == []
