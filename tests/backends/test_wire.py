"""The real wire (issue 20): the SDK's odd answers, passing 403s on result files, a create whose input is
gone, and per-key errors inside `response`. Each test failed on the code before its fix; each ends with
every text billed once by the emulator."""

import logging
import time
from collections import Counter
from pathlib import Path

import pytest

from kb import failpoints
from kb.app import KnowledgeBase
from kb.core.results import parse_lines
from kb.embed.worker import ExitReason
from kb.errors import InputFileGoneError, ModelNotFoundError, ProviderUnavailableError
from kb.providers import gemini
from kb.settings import KbSettings
from kb.testing.gemini_emulator import Fault, GeminiEmulator
from tests.support.files import write
from tests.support.settings import EMULATOR_KEY, FAST_SETTINGS

REFUSED = "You do not have permission to access the File {} or it may not exist."


def _corpus(root: Path, count: int) -> int:
    parts = [
        f"## Section {n}\n\nParagraph {n} about harbour pilot {n * 7919 % 1000}, long enough for a chunk.\n"
        for n in range(count)
    ]
    write(root / "doc.md", "\n".join(parts))
    return count


@pytest.fixture
def fast(gemini_settings: KbSettings) -> KbSettings:
    return gemini_settings.model_copy(update=FAST_SETTINGS)


def _billed(emulator: GeminiEmulator) -> Counter[str]:
    return Counter(text for _, _, text in emulator.embedded_texts())


def _attempts(kb: KnowledgeBase) -> set[int]:
    with kb.engine.connect() as connection:
        return {int(n) for (n,) in connection.exec_driver_sql("SELECT attempts FROM embedding_tasks")}


def _drain(kb: KnowledgeBase, total: int) -> None:
    assert kb.worker().run(once=True, timeout_s=120).reason == ExitReason.DRAINED
    assert kb.status().tasks == {"pending": 0, "submitted": 0, "embedded": total, "failed": 0}


# -- 1. every exception inside a provider call is a provider error; the worker never dies of one ----------


@pytest.mark.parametrize("quirk", ["upload_without_file", "upload_not_final"])
def test_an_upload_the_sdk_could_not_read_is_repaired_and_billed_once(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path, quirk: str
) -> None:
    """The finalize answered without `file` (KeyError) or not final (ValueError): the file exists remotely
    but kb does not know its name. The worker goes on; the committed upload intent finds and deletes the
    orphan, the input is uploaded again, one job is created and every text billed once."""
    total = _corpus(tmp_path / "corpus", 12)
    emulator.faults.add(Fault(route="files.upload", status=200, quirk=quirk))
    emulator.faults.add(Fault(route="files.list", status=200, quirk="empty_page", times=2))
    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        _drain(kb, total)
        assert _attempts(kb) == {0}
    creates = [r for r in emulator.log if r.route == "asyncBatchEmbedContent" and r.status == 200]
    assert len(creates) == 1
    assert set(_billed(emulator).values()) == {1} and len(_billed(emulator)) == total
    assert [stored.source for stored in emulator.stored_files()] == ["GENERATED"]  # no orphan left
    assert emulator.faults.pending() == []  # the orphan was found past two empty pages


def test_listings_survive_empty_pages_that_carry_a_token(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    """An interrupted create is looked up with batches.list; the live API sends empty pages with a token
    (the SDK's pager raises IndexError on them). The job is still found and adopted, not created twice."""
    total = _corpus(tmp_path / "corpus", 12)
    emulator.faults.add(Fault(route="batches.list", status=200, quirk="empty_page", times=3))
    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        with failpoints.armed("create.after", failpoints.interrupt), pytest.raises(KeyboardInterrupt):
            kb.flush()
        [job] = kb.jobs()
        assert kb.flush() == [job.id]
        _drain(kb, total)
    creates = [r for r in emulator.log if r.route == "asyncBatchEmbedContent" and r.status == 200]
    assert len(creates) == 1 and set(_billed(emulator).values()) == {1}


def test_an_unknown_sdk_exception_is_a_transient_provider_error_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = gemini.GeminiApi(api_key=EMULATOR_KEY, base_url="http://127.0.0.1:9")

    def send(_client: object) -> None:
        raise KeyError(f"file (key {EMULATOR_KEY})")

    with (
        caplog.at_level(logging.DEBUG, "kb.providers.gemini"),
        pytest.raises(ProviderUnavailableError) as raised,
    ):
        api.call(gemini.FILE_UPLOAD, "kb-job", send, retried=False)
    assert "KeyError" in raised.value.message and "files.upload" in raised.value.message
    assert EMULATOR_KEY not in raised.value.message
    assert "Traceback" in caplog.text and "KeyError" in caplog.text  # the traceback, at DEBUG
    assert EMULATOR_KEY not in caplog.text


def test_the_worker_goes_on_after_an_unexpected_exception_in_a_step(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    total = _corpus(tmp_path / "corpus", 6)
    failures = iter([RuntimeError("a bug in a phase")])

    def after_step() -> None:
        error = next(failures, None)
        if error is not None:
            raise error

    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        result = kb.worker(after_step=after_step).run(once=True, timeout_s=120)
        assert result.reason == ExitReason.DRAINED
        assert any("RuntimeError" in error for error in result.errors)
        assert kb.status().tasks["embedded"] == total


# -- 3. a 404 on batches.create is read, not taken for "model not available" ------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [(404, "Input file files/abc123 was not found."), (403, REFUSED.format("abc123"))],
    ids=["404-input-not-found", "403-input-refused"],
)
def test_a_create_whose_input_file_is_gone_uploads_it_again_with_no_attempt_counted(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path, status: int, message: str
) -> None:
    total = _corpus(tmp_path / "corpus", 12)
    emulator.faults.add(Fault(route="asyncBatchEmbedContent", status=status, message=message))
    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        _drain(kb, total)
        assert _attempts(kb) == {0}
        assert [job.state for job in kb.jobs()] == ["applied"]
    uploads = [r for r in emulator.log if r.route == "files.upload" and "upload_id" not in r.query]
    assert len(uploads) == 2 and set(_billed(emulator).values()) == {1}


def test_only_a_404_that_names_the_model_is_model_not_found() -> None:
    def kind(message: str) -> type:
        return gemini.classify(gemini.BATCH_CREATE, 404, "NOT_FOUND", frozenset(), message)

    assert kind("models/gemini-embedding-9 is not found for API version v1beta") is ModelNotFoundError
    assert kind("Input file files/abc was not found.") is InputFileGoneError
    assert gemini.classify(gemini.EMBED, 404, "NOT_FOUND", frozenset(), "x") is ModelNotFoundError


# -- 4. per-key errors inside `response` ------------------------------------------------------------------


def test_a_result_line_with_an_error_inside_response_is_a_per_key_error() -> None:
    lines = [
        b'{"key": "a", "response": {"error": {"code": 8, "message": "Resource exhausted"}}}',
        b'{"key": "b", "error": {"code": 3, "message": "bad"}}',
    ]
    first, second = parse_lines(lines)
    assert (first.key, first.values, first.error_code, first.error_message) == (  # type: ignore[union-attr]
        "a",
        None,
        8,
        "Resource exhausted",
    )
    assert second.error_code == 3  # type: ignore[union-attr]


# -- 2. a 403 on a result file passes: the paid results are waited for, not bought again --------------------


def test_a_result_file_refused_for_a_while_is_waited_for_and_billed_once(
    fast: KbSettings, tmp_path: Path
) -> None:
    """403 "You do not have permission to access the File" on the download of a succeeded job, more times
    than the give-up count: while its results can exist (48 h after the job ended), the job is kept,
    `kb status` says so loudly, and once the 403s pass every text is stored and billed once."""
    total = _corpus(tmp_path / "corpus", 12)
    with GeminiEmulator(api_key=EMULATOR_KEY, start_time=time.time()) as emulator:
        settings = fast.model_copy(update={"gemini_base_url": emulator.base_url})
        refused = Fault(route="files.download", status=403, message=REFUSED.format("batch-x"), times=8)
        emulator.faults.add(refused)
        with KnowledgeBase(settings=settings) as kb:
            kb.ingest([tmp_path / "corpus"])
            warnings: list[str] = []

            def look() -> None:
                warnings.extend(w for w in kb.status().warnings if "refused" in w)

            result = kb.worker(after_step=look).run(once=True, timeout_s=120)
            assert result.reason == ExitReason.DRAINED
            assert kb.status().tasks["embedded"] == total
            assert [job.state for job in kb.jobs()] == ["applied"]
            assert kb.status().spend is not None and "lost" not in kb.status().spend.by_kind  # type: ignore[union-attr]
        assert refused.fired == 8
        assert warnings and "403" in warnings[-1] and "check billing and the key's project" in warnings[-1]
        assert set(_billed(emulator).values()) == {1} and len(_billed(emulator)) == total


def test_results_refused_until_they_expire_are_recorded_as_lost_and_paid_again(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    """The job ended more than 48 h ago (the emulator's clock is far behind kb's) and every download is
    refused: after the give-up count its texts are queued again, and the results paid for but never
    received are in the cost ledger as `lost`."""
    total = _corpus(tmp_path / "corpus", 12)
    emulator.faults.add(Fault(route="files.download", status=403, message=REFUSED.format("x"), times=4))
    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        _drain(kb, total)
        first, second = sorted(kb.jobs(), key=lambda job: job.id)
        assert (first.state, second.state) == ("failed", "applied")
        assert "paid again" in (first.error or "")
        spend = kb.status().spend
        assert spend is not None and spend.by_kind["lost"]["texts"] == total
    assert set(_billed(emulator).values()) == {2}  # bought twice, and kb says so
