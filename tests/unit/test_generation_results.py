"""Reading generation results (kb.core.results): a text per key, or why there is none; never a crash."""

import json
from typing import Any

from kb.core.results import (
    BadLine,
    ErrorKind,
    GenerationItem,
    classify,
    parse_generation_lines,
    read_generation,
)
from kb.records import Generated


def answer(text: str | None, finish: str = "STOP", **usage: int) -> dict[str, Any]:
    candidate: dict[str, Any] = {"finishReason": finish, "index": 0}
    if text is not None:
        candidate["content"] = {"parts": [{"text": text}], "role": "model"}
    counts = {"promptTokenCount": 40, "candidatesTokenCount": 9, "totalTokenCount": 49} | usage
    return {"candidates": [candidate], "usageMetadata": counts, "modelVersion": "gemini-2.5-flash-lite"}


def parsed(*lines: Any) -> list[GenerationItem | BadLine]:
    return list(parse_generation_lines(line if isinstance(line, str) else json.dumps(line) for line in lines))


def test_a_response_gives_its_text_and_token_counts() -> None:
    assert read_generation(answer("Context: the guide")) == Generated("Context: the guide", 40, 9)


def test_thinking_tokens_are_billed_as_output_and_thought_parts_are_not_text() -> None:
    response = answer("final", thoughtsTokenCount=30)
    response["candidates"][0]["content"]["parts"].insert(0, {"text": "let me think", "thought": True})
    assert read_generation(response) == Generated("final", 40, 39)


def test_a_text_cut_at_the_output_limit_is_kept() -> None:
    assert read_generation(answer("Context: a lo", "MAX_TOKENS")) == Generated("Context: a lo", 40, 9)


def test_missing_usage_counts_zero_rather_than_losing_a_paid_text() -> None:
    assert read_generation({"candidates": answer("ok")["candidates"]}) == Generated("ok", 0, 0)


def test_a_blocked_prompt_is_an_error_naming_the_reason() -> None:
    reason = read_generation({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    assert reason == "the prompt was blocked (PROHIBITED_CONTENT)"


def test_a_safety_stop_or_an_empty_text_is_an_error() -> None:
    assert read_generation(answer(None, "SAFETY")) == "the answer stopped for SAFETY, with no text"
    assert read_generation(answer("partial", "RECITATION")) == "the answer stopped for RECITATION"
    assert read_generation(answer("   ")) == "the answer has no text (finishReason STOP)"
    assert read_generation({"candidates": []}) == "the answer has no candidates"
    assert read_generation("not an object") == "the answer is not a GenerateContentResponse"


def test_lines_give_one_item_per_key() -> None:
    items = parsed(
        {"response": answer("first"), "key": "a"},
        {"key": "b", "error": {"code": 13, "message": "Internal error"}},
        {"key": "c", "status": {"code": 3, "message": "Request contains an invalid argument."}},
        {"key": "d", "response": {"promptFeedback": {"blockReason": "SAFETY"}}},
        {"key": "e", "response": {"error": {"code": 8, "message": "quota"}}},
    )
    assert items[0] == GenerationItem("a", Generated("first", 40, 9))
    assert items[1] == GenerationItem("b", None, error_code=13, error_message="Internal error")
    assert items[2] == GenerationItem(
        "c", None, error_code=3, error_message="Request contains an invalid argument."
    )
    assert items[3] == GenerationItem("d", None, error_message="the prompt was blocked (SAFETY)")
    assert items[4] == GenerationItem("e", None, error_code=8, error_message="quota")
    assert [classify(i.error_code, i.error_message) for i in items[1:] if isinstance(i, GenerationItem)] == [
        ErrorKind.TRANSIENT,
        ErrorKind.PERMANENT,
        ErrorKind.PERMANENT,
        ErrorKind.TRANSIENT,
    ]


def test_a_status_given_as_text_is_that_keys_error() -> None:
    [item] = parsed({"key": "v", "status": "Bad Request: the request was refused"})
    assert item == GenerationItem("v", None, error_message="Bad Request: the request was refused")


def test_malformed_lines_are_bad_lines_not_crashes() -> None:
    items = parsed("{not json", ["a list"], {"response": answer("no key")}, "", {"key": "k"}, {"key": 7})
    assert [type(item).__name__ for item in items] == [
        "BadLine",
        "BadLine",
        "BadLine",
        "GenerationItem",
        "BadLine",
    ]
    assert [item.line_number for item in items if isinstance(item, BadLine)] == [1, 2, 3, 6]
    assert items[3] == GenerationItem("k", None, error_message="the answer is not a GenerateContentResponse")


def test_generation_models_carry_prices_and_their_sources() -> None:
    from kb.core import models

    lite = models.generation_facts("models/gemini-2.5-flash-lite")
    assert lite is not None and (lite.usd_online_input, lite.usd_online_output) == (0.10, 0.40)
    assert models.generation_facts("gemini-2.5-flash") is not None
    for facts in models.GENERATION_MODELS.values():
        assert facts.sources and all(source.startswith("https://") for source in facts.sources)
        assert facts.usd_batch_input == facts.usd_online_input / 2  # the Batch API's 50%
        assert facts.usd_batch_output == facts.usd_online_output / 2
        assert (facts.lifecycle == "retired") <= (facts.shut_down is not None)
