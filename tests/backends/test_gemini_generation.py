"""kb's Gemini generation (online and Batch API) against the emulator, through the real SDK over HTTP."""

from pathlib import Path

import pytest

from kb.core.results import GenerationItem, parse_generation_lines
from kb.core.retry import RetryPolicy
from kb.errors import InvalidRequestError, ModelNotFoundError, ProviderUnavailableError, RateLimitedError
from kb.providers.gemini import GeminiApi, GeminiBatchBackend, GeminiGenerator
from kb.records import Generated, JobState
from kb.testing.gemini_emulator import Fault, GeminiEmulator, JobPlan, TextsContaining
from tests.support.settings import EMULATOR_KEY

MODEL = "gemini-2.5-flash-lite"
PROMPT = "Title: The kb guide\n<chunk>\n# Batches\nJobs wait.\n## Polling\n</chunk>\nSituate the chunk."


def _api(emulator: GeminiEmulator, slept: list[float] | None = None, attempts: int = 4) -> GeminiApi:
    return GeminiApi(
        api_key=EMULATOR_KEY,
        base_url=emulator.base_url,
        retry=RetryPolicy(max_attempts=attempts, base_delay=1.0, max_delay=30.0),
        sleep=(slept.append if slept is not None else lambda _: None),
    )


def _generator(
    emulator: GeminiEmulator, slept: list[float] | None = None, attempts: int = 4
) -> GeminiGenerator:
    return GeminiGenerator(_api(emulator, slept, attempts), MODEL)


def test_online_generation_gives_the_text_and_the_services_token_counts(emulator: GeminiEmulator) -> None:
    generated = _generator(emulator).generate(PROMPT, max_output_tokens=200)
    assert generated == Generated(
        "Context: The kb guide\n# Batches\n## Polling",
        emulator.count_tokens(PROMPT),
        emulator.count_tokens("Context: The kb guide\n# Batches\n## Polling"),
    )
    [billed] = emulator.generations(MODEL, "online")
    assert (billed.tokens, billed.output_tokens) == (generated.input_tokens, generated.output_tokens)
    request = emulator.log[-1]
    assert request.api_version == "v1beta" and request.body["generationConfig"] == {"maxOutputTokens": 200}


def test_a_429_is_retried_after_the_servers_delay(emulator: GeminiEmulator) -> None:
    emulator.faults.add(Fault(route="generateContent", status=429, retry_delay="5s"))
    slept: list[float] = []
    assert _generator(emulator, slept).generate("hello there", max_output_tokens=50).text == "hello there"
    assert [r.status for r in emulator.log] == [429, 200]
    assert len(slept) == 1 and slept[0] >= 5.0
    assert len(emulator.generations()) == 1  # billed once


def test_a_429_that_lasts_is_rate_limited(emulator: GeminiEmulator) -> None:
    emulator.faults.add(Fault(route="generateContent", status=429, times=None))
    with pytest.raises(RateLimitedError):
        _generator(emulator, attempts=2).generate("hello", max_output_tokens=50)


def test_a_500_is_transient_and_the_key_never_shows(emulator: GeminiEmulator) -> None:
    emulator.faults.add(
        Fault(route="generateContent", status=500, times=None, message=f"boom {EMULATOR_KEY}")
    )
    with pytest.raises(ProviderUnavailableError) as raised:
        _generator(emulator, attempts=2).generate("hello", max_output_tokens=50)
    assert "500" in raised.value.message and EMULATOR_KEY not in raised.value.message
    assert [r.status for r in emulator.log] == [500, 500]


def test_a_400_is_a_bad_request_and_an_unknown_model_is_gone(emulator: GeminiEmulator) -> None:
    emulator.faults.add(Fault(route="generateContent", status=400))
    with pytest.raises(InvalidRequestError):
        _generator(emulator).generate("hello", max_output_tokens=50)
    with pytest.raises(ModelNotFoundError):
        GeminiGenerator(_api(emulator), "gemini-0-nothing").generate("hello", max_output_tokens=50)


def test_a_blocked_prompt_is_refused_with_the_reason(emulator: GeminiEmulator) -> None:
    emulator.settings.blocked_prompts_containing = "FORBIDDEN"
    with pytest.raises(InvalidRequestError, match=r"blocked \(SAFETY\)"):
        _generator(emulator).generate("a FORBIDDEN prompt", max_output_tokens=50)


def _run_batch(
    emulator: GeminiEmulator, tmp_path: Path, lines: list[tuple[str, str]], display_name: str = "kb-gen-1"
) -> tuple[GeminiBatchBackend, str]:
    backend = GeminiBatchBackend(_api(emulator))
    folder = tmp_path / "batch"
    folder.mkdir(exist_ok=True)
    input_file = backend.upload_generation_input(display_name, MODEL, lines, folder, max_output_tokens=100)
    status = backend.create_generation(display_name, MODEL, input_file)
    assert status.state == JobState.PENDING and status.display_name == display_name
    return backend, status.name


def test_a_batch_runs_from_upload_to_one_text_per_key(emulator: GeminiEmulator, tmp_path: Path) -> None:
    emulator.job_plan = JobPlan(
        pending_s=30, running_s=60, shuffle=True, item_errors=TextsContaining("BROKEN")
    )
    lines = [("c1", PROMPT), ("c2", "plain words to echo"), ("c3", "a BROKEN prompt")]
    backend, name = _run_batch(emulator, tmp_path, lines)
    assert emulator.job(name).work == "generate" and list((tmp_path / "batch").iterdir()) == []
    assert backend.get(name).state == JobState.PENDING
    emulator.clock.advance(100)
    done = backend.get(name)
    assert done.state == JobState.SUCCEEDED and done.output_file
    results = tmp_path / "results.jsonl"
    backend.download(done.output_file, results)
    with results.open("rb") as handle:
        items = {
            item.key: item for item in parse_generation_lines(handle) if isinstance(item, GenerationItem)
        }
    assert items["c1"].generated == Generated(
        emulator.generated_text(PROMPT),
        emulator.count_tokens(PROMPT),
        emulator.count_tokens("Context: The kb guide\n# Batches\n## Polling"),
    )
    assert items["c2"].generated is not None and items["c2"].generated.text == "plain words to echo"
    assert items["c3"].generated is None and items["c3"].error_code == 3
    assert sorted(record.text for record in emulator.generations(MODEL, "batch")) == [
        PROMPT,
        "plain words to echo",
    ]


def test_find_sees_generation_batches_by_display_name(emulator: GeminiEmulator, tmp_path: Path) -> None:
    backend, name = _run_batch(emulator, tmp_path, [("c1", "words")], display_name="kb-gen-find")
    found = backend.find({"kb-gen-find", "kb-gen-absent"})
    assert list(found) == ["kb-gen-find"] and found["kb-gen-find"].name == name


def test_a_failed_batch_reports_failed(emulator: GeminiEmulator, tmp_path: Path) -> None:
    emulator.job_plan = JobPlan(outcome="FAILED")
    backend, name = _run_batch(emulator, tmp_path, [("c1", "words")])
    status = backend.get(name)
    assert status.state == JobState.FAILED and status.output_file is None
    assert emulator.generations() == []


def test_a_batch_can_be_cancelled(emulator: GeminiEmulator, tmp_path: Path) -> None:
    emulator.job_plan = JobPlan(pending_s=3600)
    backend, name = _run_batch(emulator, tmp_path, [("c1", "words")])
    backend.cancel(name)
    assert backend.get(name).state == JobState.CANCELLED
    assert emulator.generations() == []
