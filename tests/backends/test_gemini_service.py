"""The real Gemini service rather than our beliefs about it: documented endpoints (v1beta, with a fallback
for a route one version lacks), errors read by what failed, gemini-embedding-2's own rules, tokens counted
by the service, and `kb doctor`."""

import json
from collections import Counter
from pathlib import Path

import pytest
from google.genai import errors as genai_errors
from pydantic import SecretStr
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.core import models
from kb.embed.worker import ExitReason
from kb.errors import (
    AuthenticationError,
    ConfigError,
    InputFileGoneError,
    InvalidRequestError,
    KbError,
    ModelNotFoundError,
    ProviderUnavailableError,
    RateLimitedError,
    RemoteGoneError,
    RetryableProviderError,
    RouteNotServedError,
)
from kb.providers import gemini
from kb.settings import KbSettings
from kb.testing.gemini_emulator import GeminiEmulator
from tests.support.corpora import write_sections
from tests.support.settings import EMULATOR_KEY, FAST_SETTINGS


@pytest.fixture
def fast(gemini_settings: KbSettings) -> KbSettings:
    return gemini_settings.model_copy(update=FAST_SETTINGS)


# -- API version ---------------------------------------------------------------------------------------------


def test_every_call_goes_to_the_documented_v1beta_by_default(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    write_sections(tmp_path / "corpus", 30, per_file=20, about="harbour pilot's tide")
    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        assert kb.worker().run(once=True, timeout_s=300).reason == ExitReason.DRAINED
        queued = kb.ingest_text("# late\n\nA late note about the harbour pilot.\n", "late.md")
        assert kb.embed_now(queued.queued_hashes).embedded == 1
        assert kb.search("harbour pilot tide", k=3).hits
    routes = Counter(request.route for request in emulator.log)
    assert {
        "files.upload",
        "asyncBatchEmbedContent",
        "batches.get",
        "files.download",
        "batchEmbedContents",
    } <= set(routes)
    versions = {(request.route, request.api_version) for request in emulator.log}
    assert {version for _, version in versions} == {"v1beta"}, versions


@pytest.mark.parametrize("configured", ["v1beta", "v1"])
def test_a_route_one_version_does_not_serve_is_tried_once_on_the_other(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path, configured: str
) -> None:
    """The other version answers, and is remembered for that route: the next call goes there at once."""
    other = "v1" if configured == "v1beta" else "v1beta"
    emulator.settings.route_versions = {"files.upload": (other,), "asyncBatchEmbedContent": (other,)}
    total = write_sections(tmp_path / "corpus", 40, per_file=20, about="harbour pilot's tide")
    settings = fast.model_copy(update={"gemini_api_version": configured, "batch_max_texts": 10})
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([tmp_path / "corpus"])
        assert kb.worker().run(once=True, timeout_s=300).reason == ExitReason.DRAINED
        assert kb.status().tasks["embedded"] == total
    uploads = [
        (r.api_version, r.status)
        for r in emulator.log
        if r.route == "files.upload" and r.method == "POST" and "upload_id" not in r.query
    ]
    creates = [(r.api_version, r.status) for r in emulator.log if r.route == "asyncBatchEmbedContent"]
    assert uploads[0] == (configured, 404) and creates[0] == (configured, 404)
    assert uploads[1:] == [(other, 200)] * 4 and creates[1:] == [(other, 200)] * 4
    gets = {r.api_version for r in emulator.log if r.route == "batches.get"}
    assert gets == {configured}  # routes the configured version serves stay there


def test_a_model_that_is_gone_is_not_mistaken_for_a_missing_route(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    emulator.models.shut_down("gemini-embedding-001")
    with KnowledgeBase(settings=fast) as kb:
        embedder = kb.embedder(kb.space_spec)
        with pytest.raises(ModelNotFoundError, match="is not available"):
            embedder.embed_documents(["anything"])
    assert [(r.api_version, r.status) for r in emulator.log] == [("v1beta", 404)]


def test_vertex_variables_in_the_environment_do_not_divert_kb(
    fast: KbSettings, emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "some-project")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")
    with KnowledgeBase(settings=fast) as kb:
        assert kb.embedder(kb.space_spec).embed_documents(["one", "two"]).shape == (2, 768)
    assert [r.route for r in emulator.log] == ["batchEmbedContents"]


# -- errors, read by route + status + reason ---------------------------------------------------------------

_HTML_404 = (
    "<!DOCTYPE html>\n<html lang=en><title>Error 404 (Not Found)!!1</title><p><b>404.</b> "
    "<p>The requested URL <code>/upload/v1/files</code> was not found on this server."
)
_KEY_INVALID = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
    }
]
_DISABLED = [
    {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "SERVICE_DISABLED",
        "domain": "googleapis.com",
    }
]
_RETRY = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}]

# (route, HTTP code, status, details, message) -> the kb error. What the worker does with each family is
# shown by the tests named in the last column.
ERROR_TABLE = [
    (
        gemini.EMBED,
        400,
        "INVALID_ARGUMENT",
        _KEY_INVALID,
        "API key not valid. Please pass a valid API key.",
        AuthenticationError,
        "stops, exit 3 (test_a_refused_key_stops_the_worker_with_exit_3)",
    ),
    (
        gemini.FILE_DOWNLOAD,
        400,
        "INVALID_ARGUMENT",
        _KEY_INVALID,
        "API key not valid. Please pass a valid API key.",
        AuthenticationError,
        "stops, exit 3",
    ),
    (
        gemini.EMBED,
        403,
        "PERMISSION_DENIED",
        _DISABLED,
        "Generative Language API has not been used in project 1 before or it is disabled.",
        AuthenticationError,
        "stops, exit 3",
    ),
    (
        gemini.BATCH_CREATE,
        403,
        "PERMISSION_DENIED",
        None,
        "Permission denied: Consumer 'api_key:x' has been suspended.",
        AuthenticationError,
        "stops, exit 3",
    ),
    (
        gemini.FILE_DOWNLOAD,
        403,
        "PERMISSION_DENIED",
        None,
        "You do not have permission to access the File batch-x or it may not exist.",
        RemoteGoneError,
        "job recovery (test_a_job_whose_results_expired_is_handed_back_and_the_worker_ends)",
    ),
    (
        gemini.FILE_DELETE,
        403,
        "PERMISSION_DENIED",
        None,
        "You do not have permission to access the File abc or it may not exist.",
        RemoteGoneError,
        "ignored: files expire anyway",
    ),
    (
        gemini.FILE_DOWNLOAD,
        404,
        "NOT_FOUND",
        None,
        "File batch-x was not found.",
        RemoteGoneError,
        "job recovery",
    ),
    (
        gemini.BATCH_GET,
        404,
        "NOT_FOUND",
        None,
        "Requested entity was not found.",
        gemini.BatchJobNotFoundError,
        "job recovery",
    ),
    (
        gemini.BATCH_CANCEL,
        404,
        "NOT_FOUND",
        None,
        "Requested entity was not found.",
        gemini.BatchJobNotFoundError,
        "job recovery",
    ),
    (
        gemini.EMBED,
        404,
        "NOT_FOUND",
        None,
        "models/text-embedding-004 is not found for API version v1beta, or is not supported for "
        "embedContent. Call ListModels to see the list of available models and their supported methods.",
        ModelNotFoundError,
        "texts fail; status suggests kb reindex (test_reindex)",
    ),
    (
        gemini.BATCH_CREATE,
        404,
        "NOT_FOUND",
        None,
        "models/gemini-embedding-001 is not found for API version v1beta, or is not supported for "
        "asyncBatchEmbedContent.",
        ModelNotFoundError,
        "job refused, texts back (attempt counted)",
    ),
    (
        gemini.FILE_UPLOAD,
        404,
        "Not Found",
        None,
        _HTML_404,
        RouteNotServedError,
        "tried once on the other API version (test_a_route_one_version_does_not_serve_...)",
    ),
    (
        gemini.BATCH_GET,
        404,
        "NOT_FOUND",
        None,
        "Method not found.",
        RouteNotServedError,
        "tried once on the other API version",
    ),
    (
        gemini.EMBED,
        429,
        "RESOURCE_EXHAUSTED",
        _RETRY,
        "You exceeded your current quota, please check your plan and billing details.",
        RateLimitedError,
        "retried after RetryInfo (test_429_storm_is_survived_with_the_servers_delay)",
    ),
    (
        gemini.BATCH_CREATE,
        429,
        "RESOURCE_EXHAUSTED",
        None,
        "Enqueued tokens limit exceeded for models/gemini-embedding-001.",
        RateLimitedError,
        "submission deferred with back-off",
    ),
    (
        gemini.BATCH_GET,
        500,
        "INTERNAL",
        None,
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        ProviderUnavailableError,
        "retried; an outage is waited out (test_an_outage_is_waited_out_without_giving_the_job_up)",
    ),
    (
        gemini.EMBED,
        503,
        "UNAVAILABLE",
        None,
        "The model is overloaded. Please try again later.",
        ProviderUnavailableError,
        "retried with back-off",
    ),
    (
        gemini.EMBED,
        504,
        "DEADLINE_EXCEEDED",
        None,
        "Deadline expired before operation could complete.",
        ProviderUnavailableError,
        "retried with back-off",
    ),
    (
        gemini.EMBED,
        400,
        "INVALID_ARGUMENT",
        None,
        "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch",
        InvalidRequestError,
        "request split until the text at fault is alone (test_one_refused_text_costs_the_others_nothing)",
    ),
    (
        gemini.EMBED,
        400,
        "INVALID_ARGUMENT",
        None,
        "Request payload size exceeds the limit: 4194304 bytes.",
        InvalidRequestError,
        "request split",
    ),
    (
        gemini.BATCH_CREATE,
        400,
        "FAILED_PRECONDITION",
        None,
        "File files/abc is not in an ACTIVE state.",
        InvalidRequestError,
        "job refused, texts back (attempt counted)",
    ),
    # Text generation reads errors the same way.
    (gemini.GENERATE, 429, "RESOURCE_EXHAUSTED", _RETRY, "Quota exceeded.", RateLimitedError, "retried"),
    (
        gemini.GENERATE,
        503,
        "UNAVAILABLE",
        None,
        "The model is overloaded.",
        ProviderUnavailableError,
        "retried",
    ),
    (gemini.GENERATE, 400, "INVALID_ARGUMENT", None, "Bad field.", InvalidRequestError, "the text fails"),
    (
        gemini.GENERATE,
        404,
        "NOT_FOUND",
        None,
        "models/gemini-0 is not found for API version v1beta, or is not supported for generateContent.",
        ModelNotFoundError,
        "model gone",
    ),
    (
        gemini.GENERATION_CREATE,
        404,
        "NOT_FOUND",
        None,
        "Input file files/abc was not found.",
        InputFileGoneError,
        "input uploaded again",
    ),
]


@pytest.mark.parametrize(
    ("route", "code", "status", "details", "message", "expected", "reaction"),
    ERROR_TABLE,
    ids=[f"{row[0]}-{row[1]}-{row[5].__name__}" for row in ERROR_TABLE],
)
def test_each_error_is_read_by_route_status_and_reason(
    route: str,
    code: int,
    status: str,
    details: list[object] | None,
    message: str,
    expected: type[KbError],
    reaction: str,
) -> None:
    if message.startswith("<!DOCTYPE"):  # the SDK's shape for a non-JSON body
        body: dict[str, object] = {"message": message, "status": status}
    else:
        inner: dict[str, object] = {"code": code, "message": message, "status": status}
        if details:
            inner["details"] = details
        body = {"error": inner}
    error = (genai_errors.ServerError if code >= 500 else genai_errors.ClientError)(code, body)
    translated = gemini.translate_error(error, route, "the subject", secret="secret-key")
    assert type(translated) is expected, reaction
    assert "<html" not in translated.message.lower() and "secret-key" not in translated.message
    assert isinstance(translated, RetryableProviderError) == (code == 429 or code >= 500)
    assert isinstance(translated, ConfigError) == (expected is AuthenticationError)
    if isinstance(translated, RateLimitedError) and details == _RETRY:
        assert translated.retry_after == 26.0


# -- gemini-embedding-2 --------------------------------------------------------------------------------------


def test_the_emulator_models_gemini_embedding_2_as_the_service_does(emulator: GeminiEmulator) -> None:
    """What would have caught kb's old online path: the SDK folds a list of strings into ONE embedding for
    this model, and the service refuses a task_type for it."""
    from google import genai
    from google.genai import types

    with genai.Client(
        api_key=EMULATOR_KEY, vertexai=False, http_options=types.HttpOptions(base_url=emulator.base_url)
    ) as client:
        folded = client.models.embed_content(model="gemini-embedding-2", contents=["a", "b", "c"])
        assert len(folded.embeddings or []) == 1
        with pytest.raises(genai_errors.ClientError, match="task_type is not supported"):
            client.models.embed_content(
                model="gemini-embedding-2",
                contents=["a"],
                config=types.EmbedContentConfig(task_type="RETRIEVAL_QUERY"),
            )


def test_ingest_now_on_gemini_embedding_2_stores_and_bills_every_text_once(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    total = write_sections(tmp_path / "corpus", 150, per_file=20, about="harbour pilot's tide")
    settings = fast.model_copy(update={"embedding_model": "gemini-embedding-2"})
    with KnowledgeBase(settings=settings) as kb:
        queued = kb.ingest([tmp_path / "corpus"])
        report = kb.embed_now(queued.queued_hashes)
        assert (report.embedded, report.failed, report.errors) == (total, 0, [])
        hits = kb.search("harbour pilot tide number 7", k=3, mode="vector")
        assert hits.hits
        spend = kb.status().spend
    calls = [r for r in emulator.log if r.route == "batchEmbedContents"]
    documents, query = calls[:-1], calls[-1]
    assert [c.item_count for c in documents] == [100, 50]  # one Content (one embedding) per text
    assert all(t.startswith(models.DOCUMENT_PREFIX) for c in documents for t in c.texts)
    assert query.texts == [models.QUERY_PREFIX + "harbour pilot tide number 7"]
    assert {t for c in calls for t in c.task_types} == {"TASK_TYPE_UNSPECIFIED"}
    billed = Counter(text for _, _, text in emulator.embedded_texts())
    assert len(billed) == total + 1 and set(billed.values()) == {1}
    assert spend is not None and spend.by_kind["online"]["tokens"] == emulator.billed_tokens(
        mode="online"
    ) - emulator.count_tokens(query.texts[0])
    assert spend.tokens_measured == spend.by_kind["online"]["tokens"]  # counted by the service, not estimated


def test_reindex_from_001_to_gemini_embedding_2_by_batch(
    fast: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    total = write_sections(tmp_path / "corpus", 60, per_file=20, about="harbour pilot's tide")
    with KnowledgeBase(settings=fast) as kb:
        kb.ingest([tmp_path / "corpus"])
        assert kb.worker().run(once=True, timeout_s=300).reason == ExitReason.DRAINED
        spec = kb.reindex_spec("gemini-embedding-2")
        assert kb.reindex_estimate(spec).usd_batch is not None
        space_id = kb.reindex_start(spec)
        assert kb.worker().run(once=True, timeout_s=300).reason == ExitReason.DRAINED
        status = kb.status()
        assert {s.id: (s.model, s.state) for s in status.spaces} == {
            1: ("gemini-embedding-001", "retired"),
            space_id: ("gemini-embedding-2", "active"),
        }
        assert status.tasks == {"pending": 0, "submitted": 0, "embedded": total, "failed": 0}
        assert kb.search("tide number 12", k=3).space_id == space_id
        assert (
            status.spend is not None
            and status.spend.tokens_measured == status.spend.by_kind["batch"]["tokens"]
        )
    jobs = [
        r for r in emulator.log if r.route == "asyncBatchEmbedContent" and r.model == "gemini-embedding-2"
    ]
    lines = [text for job in jobs for text in job.texts]
    assert len(lines) == total and all(t.startswith(models.DOCUMENT_PREFIX) for t in lines)
    assert {t for job in jobs for t in job.task_types} == {"TASK_TYPE_UNSPECIFIED"}
    for model in ("gemini-embedding-001", "gemini-embedding-2"):
        billed = Counter(text for _, mode, text in emulator.embedded_texts(model) if mode == "batch")
        assert len(billed) == total and set(billed.values()) == {1}
    assert all(r.api_version == "v1beta" for r in emulator.log)


def test_the_model_table_drives_prices_and_the_lists_of_retired_and_batch_refusing_models() -> None:
    settings = KbSettings()
    assert settings.model_prices["gemini-embedding-2"] == (0.20, 0.10)
    assert settings.model_prices["gemini-embedding-001"] == (0.15, 0.075)
    assert (
        "text-embedding-004" in settings.retired_models
        and "text-embedding-004" in settings.batch_incompatible_models
    )
    assert "gemini-embedding-2" not in settings.batch_incompatible_models
    assert models.facts("gemini-embedding-2").input_tokens == 8192  # type: ignore[union-attr]
    assert models.facts("gemini-embedding-001").check_dimensions(4096)  # type: ignore[union-attr]
    assert gemini.request_line("t1", "gemini-embedding-2", 768, "x")["request"] == {
        "content": {"parts": [{"text": "title: none | text: x"}]},
        "output_dimensionality": 768,
    }
    assert (
        gemini.request_line("t1", "gemini-embedding-001", 768, "x")["request"]["task_type"]
        == "RETRIEVAL_DOCUMENT"
    )


# -- kb doctor --------------------------------------------------------------------------------------------


def _doctor(
    runner: CliRunner, emulator: GeminiEmulator, tmp_path: Path, key: str, *args: str
) -> tuple[int, dict[str, object]]:
    env = {
        "GEMINI_API_KEY": key,
        "GOOGLE_GEMINI_BASE_URL": emulator.base_url,
        "KB_DB": str(tmp_path / "kb.sqlite"),
    }
    result = runner.invoke(app, ["doctor", "--live", "--json", *args], env=env)
    return result.exit_code, json.loads(result.stdout)


def test_doctor_live_passes_against_the_emulator_and_touches_no_knowledge_base(
    runner: CliRunner, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    code, report = _doctor(runner, emulator, tmp_path, EMULATOR_KEY)
    assert code == 0 and report["ok"] is True, report
    checks = {c["step"]: c for c in report["checks"]}  # type: ignore[union-attr]
    for step in ("models.get", "countTokens", "online embedding", "upload", "create", "poll", "download"):
        assert checks[step]["ok"] is True and checks[step]["seconds"] is not None, step
    assert (
        "768 dimensions" in checks["online embedding"]["detail"]
        and "norm 1.0000" in checks["online embedding"]["detail"]
    )
    assert "keys ['d0', 'd1']" in checks["download"]["detail"]
    assert 0 < report["usd"] < 0.001  # type: ignore[operator]
    assert EMULATOR_KEY not in json.dumps(report)
    assert not (tmp_path / "kb.sqlite").exists()
    assert [f.source for f in emulator.stored_files()] == ["GENERATED"]  # its input file deleted


def test_doctor_live_with_a_wrong_key_fails_naming_the_step(
    runner: CliRunner, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    code, report = _doctor(runner, emulator, tmp_path, "wrong-key-1234")
    assert code == 3 and report["ok"] is False
    [failed] = [c for c in report["checks"] if c["ok"] is False]  # type: ignore[union-attr]
    assert failed["step"] == "models.get" and "refused the key" in failed["detail"]


def test_doctor_reports_a_job_still_pending_and_checks_it_later(
    runner: CliRunner, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    from kb.testing.gemini_emulator import JobPlan

    emulator.job_plan = JobPlan(pending_s=3600)
    code, report = _doctor(runner, emulator, tmp_path, EMULATOR_KEY, "--wait", "0")
    job = report["pending_job"]
    assert code == 0 and isinstance(job, str) and job.startswith("batches/")
    emulator.clock.advance(3700)
    code, later = _doctor(runner, emulator, tmp_path, EMULATOR_KEY, "--job", job)
    checks = {c["step"]: c for c in later["checks"]}  # type: ignore[union-attr]
    assert code == 0 and checks["download"]["ok"] is True and "upload" not in checks


def test_doctor_offline_says_what_is_configured_and_never_shows_the_key(
    runner: CliRunner, tmp_path: Path
) -> None:
    env = {
        "GEMINI_API_KEY": "sk-secret-abcdef",
        "GOOGLE_GENAI_USE_VERTEXAI": "true",
        "KB_DB": str(tmp_path / "kb.sqlite"),
    }
    result = runner.invoke(app, ["doctor", "--json"], env=env)
    report = json.loads(result.stdout)
    checks = {c["step"]: c["detail"] for c in report["checks"]}
    assert result.exit_code == 0 and "sk-secret-abcdef" not in result.stdout
    assert "set in GEMINI_API_KEY" in checks["api key"] and "sqlite-vec" in checks["sqlite"]
    assert "GOOGLE_GENAI_USE_VERTEXAI=true" in checks["vertex"] and checks["api version"].startswith("v1beta")
    assert checks["provider"] == "gemini, because a Gemini API key is set"


def test_settings_refuse_an_unknown_api_version() -> None:
    with pytest.raises(ValueError, match="v1beta"):
        KbSettings(gemini_api_version="v2")  # type: ignore[arg-type]
    assert KbSettings(gemini_api_key=SecretStr("x")).gemini_api_version is None
