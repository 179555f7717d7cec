"""`kb doctor`: is this machine and this configuration ready, and (with `--live`) does the real service
answer as kb expects? A first real run that can be checked before a whole knowledge base is sent.

Offline: Python and SQLite, extension loading and sqlite-vec, the schema, the results folder and free disk,
the provider in force and why, the key (present or not, never shown), base URL, API version and the Vertex
variables kb ignores. Live, with the configured key: the smallest real round trip, each step timed and
priced: the model, countTokens, one online embedding (dimensions and norm checked), then a 2-text batch job
(upload, create, poll, download, check keys and dimensions, delete its files). It never touches the
knowledge base: nothing is written to the database.
"""

import contextlib
import importlib.metadata
import math
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kb.core import models
from kb.errors import KbError
from kb.providers.factory import gemini_api
from kb.records import JobState
from kb.settings import KbSettings, environment, is_postgres_url
from kb.store import migrate
from kb.store.dbapi import sqlite_driver
from kb.store.engine import create_engine, safe_url

if TYPE_CHECKING:
    from kb.providers.gemini import GeminiBatchBackend, GeminiEmbedder

DOCTOR_TEXTS = ("kb doctor checks the first of two texts.", "kb doctor checks the second of two texts.")
_POLL_S = 2.0


@dataclass(slots=True)
class Check:
    """One line of the report. `ok` None: information, or a step still waiting (not a failure)."""

    step: str
    ok: bool | None
    detail: str
    seconds: float | None = None
    usd: float | None = None


@dataclass(slots=True)
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    pending_job: str | None = None  # a batch job to check later with `kb doctor --job NAME`
    exit_code: int = 1  # of the kb error that failed a live step (3: the key was refused)

    @property
    def ok(self) -> bool:
        return all(check.ok is not False for check in self.checks)

    @property
    def usd(self) -> float:
        return sum(check.usd or 0.0 for check in self.checks)

    def add(self, step: str, ok: bool | None, detail: str) -> Check:
        check = Check(step, ok, detail)
        self.checks.append(check)
        return check


def offline(settings: KbSettings, report: DoctorReport) -> None:
    env = environment()
    report.add(
        "python", True, f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    )
    _sqlite(report)
    _database(settings, report)
    _results_folder(settings, report)
    provider = settings.resolved_provider()
    why = (
        f"KB_PROVIDER={settings.provider}"
        if settings.provider
        else ("a Gemini API key is set" if settings.gemini_api_key else "no Gemini API key is set")
    )
    report.add("provider", True, f"{provider}, because {why}")
    key = settings.gemini_api_key
    if key is None:
        report.add("api key", None if provider == "local" else False, "not set (GEMINI_API_KEY, or .env)")
    else:
        where = env.key_variable or ".env or a setting"
        report.add("api key", True, f"set in {where} ({len(key.get_secret_value())} characters; never shown)")
    base = (
        settings.gemini_base_url or env.sdk_base_url or "https://generativelanguage.googleapis.com/ (default)"
    )
    report.add("base url", None, base)
    version = settings.gemini_api_version or "v1beta"
    note = f" (GOOGLE_GENAI_API_VERSION={env.sdk_api_version} is ignored)" if env.sdk_api_version else ""
    report.add("api version", None, f"{version}; a call it does not serve is tried once on the other{note}")
    if env.vertex:
        names = ", ".join(f"{name}={value}" for name, value in env.vertex.items())
        report.add("vertex", None, f"{names} set: ignored, kb always calls the Gemini Developer API")
    else:
        report.add("vertex", None, "no Vertex variables set (kb always calls the Gemini Developer API)")
    report.add("google-genai", None, importlib.metadata.version("google-genai"))
    facts = models.facts(settings.embedding_model)
    if facts is None:
        report.add(
            "model", None, f"{settings.embedding_model}: not in kb's table; treated as gemini-embedding-001"
        )
    else:
        dims = settings.embedding_dimensions
        problem = facts.check_dimensions(dims)
        summary = (
            f"{facts.name} ({facts.lifecycle}), {dims} of {facts.dims_min}-{facts.dims_max} dims, "
            f"{facts.input_tokens:,} input tokens, batch {'yes' if facts.batch else 'no'}, "
            f"${facts.usd_online}/${facts.usd_batch} per 1M tokens online/batch"
        )
        report.add("model table", problem is None and facts.lifecycle != "retired", problem or summary)


def _sqlite(report: DoctorReport) -> None:
    try:
        driver = sqlite_driver()
    except KbError as error:
        report.add("sqlite", False, error.message)
        return
    connection = driver.connect(":memory:")
    try:
        connection.enable_load_extension(True)
        import sqlite_vec

        sqlite_vec.load(connection)
        vec = connection.execute("SELECT vec_version()").fetchone()[0]
    finally:
        connection.close()
    report.add(
        "sqlite",
        True,
        f"{driver.__name__} with SQLite {driver.sqlite_version}: extensions load, FTS5, sqlite-vec {vec}",
    )


def _database(settings: KbSettings, report: DoctorReport) -> None:
    target = settings.database
    location = safe_url(target)
    if not is_postgres_url(target) and not Path(target).exists():
        report.add(
            "database", None, f"{location}: not created yet (schema {migrate.head_revision()} on first use)"
        )
        return
    try:
        engine = create_engine(target, busy_timeout_ms=settings.busy_timeout_ms)
        try:
            current = migrate.current_revision(engine)
        finally:
            engine.dispose()
    except KbError as error:
        report.add("database", False, error.message)
        return
    head = migrate.head_revision()
    if current == head:
        report.add("database", True, f"{location}: schema {current} (current)")
    else:
        report.add("database", None, f"{location}: schema {current}, kb's is {head} (`kb db upgrade`)")


def _results_folder(settings: KbSettings, report: DoctorReport) -> None:
    folder = settings.results_dir or (
        Path("kb-results").absolute()
        if settings.database_url
        else settings.db.parent / (settings.db.name + ".results")
    )
    existing = folder if folder.exists() else folder.parent
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".kb-doctor-"):
            pass
        free = shutil.disk_usage(existing).free
    except OSError as error:
        report.add("results folder", False, f"{folder}: cannot write ({error.strerror or error})")
        return
    report.add("results folder", free > 1e9, f"{folder}: writable, {free / 1e9:,.1f} GB free")


# -- live --------------------------------------------------------------------------------------------------


def live(settings: KbSettings, report: DoctorReport, wait_s: float, job: str | None = None) -> None:
    """The smallest real round trip with the configured key. Stops at the first step that fails."""
    from kb.providers.gemini import GeminiBatchBackend, GeminiEmbedder

    if settings.gemini_api_key is None:
        report.add("live", False, "no Gemini API key: set GEMINI_API_KEY")
        return
    model, dims = settings.embedding_model, settings.embedding_dimensions
    facts = models.facts(model)
    api = gemini_api(settings)
    embedder = GeminiEmbedder(api, model, dims)
    backend = GeminiBatchBackend(api)
    try:
        with _step(report, "models.get") as check:
            info = embedder.model_info()
            limit = info.input_token_limit or "?"
            check.detail = (
                f"{info.name}: {limit} input tokens, {', '.join(info.methods) or 'no methods listed'}"
            )
        if job is None:
            _online(report, embedder, facts, dims)
        _batch(report, backend, model, dims, facts, wait_s, job)
    except _Stop:
        pass
    finally:
        versions = ", ".join(f"{route} {version}" for route, version in sorted(api.versions.items()))
        report.add("api versions used", None, versions or "none")
        api.close()


class _Stop(Exception):
    """A live step failed: the report says which."""


@contextlib.contextmanager
def _step(report: DoctorReport, name: str, usd: Callable[[], float | None] | None = None) -> Iterator[Check]:
    check = report.add(name, True, "")
    started = time.monotonic()
    try:
        yield check
    except KbError as error:
        check.ok, check.detail = False, error.message
        report.exit_code = error.exit_code
        raise _Stop from None
    finally:
        check.seconds = time.monotonic() - started
        if usd is not None and check.ok:
            check.usd = usd()


def _online(
    report: DoctorReport, embedder: "GeminiEmbedder", facts: models.ModelFacts | None, dims: int
) -> None:
    with _step(report, "countTokens") as check:
        tokens = embedder.count_tokens([DOCTOR_TEXTS[0]])
        check.detail = f"{tokens} tokens in {DOCTOR_TEXTS[0]!r}"
    price = facts.usd_online if facts else None
    counted: list[int] = []
    with _step(report, "online embedding", lambda: _cost(counted[0] if counted else tokens, price)) as check:
        matrix, measured = embedder.embed_counted([DOCTOR_TEXTS[0]])
        counted.append(measured if measured is not None else tokens)
        norm = float((matrix[0] ** 2).sum()) ** 0.5
        if matrix.shape != (1, dims) or not math.isclose(norm, 1.0, abs_tol=1e-3):
            check.ok = False
        check.detail = f"{matrix.shape[1]} dimensions (asked {dims}), norm {norm:.4f} after normalising"
        if not check.ok:
            raise _Stop


def _batch(
    report: DoctorReport,
    backend: "GeminiBatchBackend",
    model: str,
    dims: int,
    facts: models.ModelFacts | None,
    wait_s: float,
    job: str | None,
) -> None:
    if facts is not None and not facts.batch:
        report.add("batch job", None, f"{model} does not support the Batch API: texts are embedded online")
        return
    folder = Path(tempfile.mkdtemp(prefix="kb-doctor-"))
    display_name = f"kb-doctor-{secrets.token_hex(4)}"
    input_file = None
    try:
        if job is None:
            lines = [(f"d{n}", text) for n, text in enumerate(DOCTOR_TEXTS)]
            with _step(report, "upload") as check:
                input_file = backend.upload_input(display_name, model, dims, lines, folder)
                check.detail = f"{input_file} (2 lines)"
            with _step(report, "create") as check:
                remote = backend.create(display_name, model, input_file)
                check.detail = f"{remote.name} ({remote.raw_state})"
            job = remote.name
        with _step(report, "poll") as check:
            deadline = time.monotonic() + wait_s
            status = backend.get(job)
            while status.state not in (
                JobState.SUCCEEDED,
                JobState.FAILED,
                JobState.EXPIRED,
                JobState.CANCELLED,
            ):
                if time.monotonic() >= deadline:
                    check.ok = None
                    check.detail = (
                        f"{job} still {status.raw_state}: check later with `kb doctor --live --job {job}`"
                    )
                    report.pending_job = job
                    input_file = None  # the job still needs it; `--job` deletes it
                    return
                time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
                status = backend.get(job)
            check.detail = f"{job} {status.raw_state}"
            if status.state != JobState.SUCCEEDED or status.output_file is None:
                check.ok = False
                raise _Stop
        tokens: list[int] = []
        price = facts.usd_batch if facts else None
        with _step(report, "download", lambda: _cost(sum(tokens), price)) as check:
            path = folder / "results.jsonl"
            backend.download(status.output_file, path)
            seen = _check_results(path, dims, tokens)
            check.detail = (
                f"{len(seen)} results, keys {sorted(seen)}, {dims} dimensions each, {sum(tokens)} tokens"
            )
            if sorted(seen) != ["d0", "d1"]:
                check.ok = False
                raise _Stop
        if input_file is None and status.display_name and status.display_name.startswith("kb-doctor-"):
            backend.discard_input(status.display_name)  # a job checked later: its input is not needed now
    finally:
        if input_file is not None:
            backend.delete_file(input_file)
        shutil.rmtree(folder, ignore_errors=True)


def _check_results(path: Path, dims: int, tokens: list[int]) -> set[str]:
    from kb.core.results import ResultItem, parse_lines

    seen = set()
    with path.open("rb") as handle:
        for item in parse_lines(handle):
            if isinstance(item, ResultItem) and item.values is not None and len(item.values) == dims:
                seen.add(item.key)
                tokens.append(item.token_count or 0)
    return seen


def _cost(tokens: int, usd_per_million: float | None) -> float | None:
    return None if usd_per_million is None else tokens * usd_per_million / 1e6


def to_json(report: DoctorReport) -> dict[str, object]:
    return {
        "ok": report.ok,
        "usd": report.usd,
        "pending_job": report.pending_job,
        "checks": [
            {"step": c.step, "ok": c.ok, "detail": c.detail, "seconds": c.seconds, "usd": c.usd}
            for c in report.checks
        ],
    }
