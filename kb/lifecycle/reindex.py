"""Reindex: move the whole index to another embedding space (model, dimensions), with search staying up.

A reindex builds a new space beside the active one: one task per distinct chunk text, content-addressed, so
texts the target space already has cost nothing and running it again continues rather than restarts. The
worker fills it through the batch API like any space. When every text is embedded (failures reported, not
blocking unless strict), the space is activated in one transaction; the old one is retired and kept until
`drop_retired`, so `rollback` can bring it back.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Connection, Engine

from kb.core.chunking import estimate_tokens
from kb.errors import InputError
from kb.records import ChunkInput, SpaceSpec, SpaceState, spec_of
from kb.store import contexts, ledger, spaces, tasks, vectors
from kb.store import documents as store
from kb.store.engine import serialize, write_transaction
from kb.store.usage import Prices


@dataclass(frozen=True, slots=True)
class Estimate:
    spec: SpaceSpec
    texts: int  # distinct texts the target space still needs
    already_embedded: int
    tokens: int
    tokens_calibrated: bool  # scaled by the provider's own token count on a sample
    usd_batch: float | None
    usd_online: float | None
    jobs: int


@dataclass(frozen=True, slots=True)
class ReindexStatus:
    space_id: int
    label: str
    state: str
    total: int
    embedded: int
    pending: int
    submitted: int
    failed: int
    jobs_in_flight: int
    eta_s: float | None
    previous: str | None

    @property
    def coverage(self) -> float:
        return self.embedded / self.total if self.total else 1.0

    @property
    def complete(self) -> bool:
        return self.pending == 0 and self.submitted == 0


TokenCounter = Callable[[list[str]], int | None]  # the provider's own count for a few texts


def estimate(
    engine: Engine,
    spec: SpaceSpec,
    prices: Prices,
    texts_per_job: int,
    count_tokens: TokenCounter | None = None,
) -> Estimate:
    """What building `spec` would cost now: only texts the space does not have yet count."""
    with engine.connect() as connection:
        wanted = store.distinct_texts(connection, spec.chunk_input)
        if spec.chunk_input == ChunkInput.SITUATED:  # chunks whose context is still to be written, too
            wanted |= contexts.awaiting(connection)
        existing = spaces.find(connection, spec)
        embedded = tasks.embedded_among(connection, existing.id, set(wanted)) if existing else set()
        sample = store.sample_texts(connection, 200, spec.chunk_input) if count_tokens else []
    needed = {sha: tokens for sha, tokens in wanted.items() if sha not in embedded}
    tokens = sum(needed.values())
    factor = _calibration(sample, count_tokens)
    tokens = round(tokens * factor) if factor else tokens
    return Estimate(
        spec=spec,
        texts=len(needed),
        already_embedded=len(embedded),
        tokens=tokens,
        tokens_calibrated=factor is not None,
        usd_batch=None if prices.batch is None else tokens / 1e6 * prices.batch,
        usd_online=None if prices.online is None else tokens / 1e6 * prices.online,
        jobs=math.ceil(len(needed) / texts_per_job) if needed else 0,
    )


def _calibration(sample: list[str], count_tokens: TokenCounter | None) -> float | None:
    """The provider's tokens per kb-estimated token, measured on a sample (None: not measured)."""
    if not sample or count_tokens is None:
        return None
    estimated = sum(estimate_tokens(t) for t in sample)
    try:
        counted = count_tokens(sample)
    except Exception:  # an estimate without calibration is still an estimate
        return None
    return counted / estimated if estimated and counted else None


def start(engine: Engine, spec: SpaceSpec) -> int:
    """Create (or resume) the building space for `spec` and queue every text it lacks."""
    now = time.time()
    with write_transaction(engine) as connection:
        active = spaces.active(connection)
        if active is not None and spec_of(active) == spec:
            headers = "with" if spec.chunk_input == ChunkInput.HEADED else "without"
            raise InputError(
                f"the active space already is {spec.model} at {spec.dimensions} dimensions, {headers} "
                "chunk headers"
            )
        if spec.chunk_input == ChunkInput.SITUATED and contexts.current(connection) is None:
            raise InputError("no chunk contexts are being written: run `kb enrich` first")
        target = spaces.find(connection, spec)
        if target is None:
            space_id = spaces.create(connection, spec, SpaceState.BUILDING)
        else:
            space_id = target.id
            if target.state == SpaceState.RETIRED:
                spaces.set_state(connection, space_id, SpaceState.BUILDING, now)
            vectors.create_table(connection, space_id, spec.dimensions)
        tasks.queue(connection, space_id, store.distinct_texts(connection, spec.chunk_input), now)
    return space_id


def status(engine: Engine, space_id: int | None = None) -> ReindexStatus | None:
    """Coverage of the space being built (or the given one), jobs in flight, and an ETA."""
    with engine.connect() as connection:
        space = spaces.by_id(connection, space_id) if space_id else None
        if space is None:
            candidates = spaces.in_state(connection, SpaceState.BUILDING)
            space = candidates[-1] if candidates else None
        if space is None:
            return None
        counts = tasks.counts_by_status(connection, space.id)
        total = len(store.distinct_texts(connection, space.chunk_input))
        if space.chunk_input == ChunkInput.SITUATED:  # a chunk waiting for its context waits here too
            awaiting = len(contexts.awaiting(connection))
            total += awaiting
            counts = {**counts, "pending": counts["pending"] + awaiting}
        in_flight = ledger.live_count(connection, space.id)
        eta = _eta(connection, space.id, counts["pending"] + counts["submitted"])
        previous = spaces.active(connection) if space.state == SpaceState.BUILDING else None
    return ReindexStatus(
        space_id=space.id,
        label=spaces.label(space),
        state=space.state,
        total=total,
        embedded=counts["embedded"],
        pending=counts["pending"],
        submitted=counts["submitted"],
        failed=counts["failed"],
        jobs_in_flight=int(in_flight),
        eta_s=eta,
        previous=spaces.label(previous) if previous else None,
    )


def _eta(connection: Connection, space_id: int, remaining: int) -> float | None:
    """Remaining texts at the rate observed over this space's finished jobs (submission to apply)."""
    done, first, last = ledger.applied_throughput(connection, space_id)
    if not remaining:
        return 0.0
    if not done or first is None or last is None or last <= first:
        return None
    return float(remaining / (done / (last - first)))


def activate(engine: Engine, space_id: int | None = None, strict: bool = False, force: bool = False) -> int:
    """Make the building space (or `space_id`) active and retire the active one, in one transaction."""
    report = status(engine, space_id)
    if report is None:
        raise InputError("no space is being built: start one with `kb reindex`")
    if not force and not report.complete:
        raise InputError(
            f"{report.label} is not complete ({report.embedded:,} of {report.total:,} texts embedded); "
            "wait for `kb worker`, or use --activate to switch now"
        )
    if strict and report.failed:
        raise InputError(f"{report.failed:,} texts failed in {report.label}; see `kb errors` (--strict)")
    now = time.time()
    with write_transaction(engine) as connection:
        serialize(connection, "kb.store.spaces")  # several workers may reach the cut-over at the same moment
        active = spaces.in_state(connection, SpaceState.ACTIVE)
        if [space.id for space in active] == [report.space_id]:
            return report.space_id  # another worker just did it
        for space in active:
            spaces.set_state(connection, space.id, SpaceState.RETIRED, now)
        spaces.set_state(connection, report.space_id, SpaceState.ACTIVE, now)
    return report.space_id


def activate_if_complete(engine: Engine, min_coverage: float = 0.995, strict: bool = False) -> int | None:
    """The worker's automatic cut-over: activate the building space once nothing is left to embed and at
    least `min_coverage` of its texts are embedded. Below that (texts failed) search stays on the active
    space, and `kb status` says what to do (`kb errors`, `kb retry`), so that a reindex whose texts mostly
    failed never replaces a whole index with an empty one.

    Runs after every worker step, so it looks at task counts only (one indexed query)."""
    with engine.connect() as connection:
        candidates = spaces.in_state(connection, SpaceState.BUILDING)
        if not candidates:
            return None
        counts = tasks.counts_by_status(connection, candidates[-1].id)
        if candidates[-1].chunk_input == ChunkInput.SITUATED and contexts.awaiting(connection):
            return None  # contexts are still being written: their chunks are not embedded yet
    if counts["pending"] or counts["submitted"] or (strict and counts["failed"]):
        return None
    if coverage(counts) < min_coverage:
        return None
    return activate(engine, candidates[-1].id)


def coverage(counts: dict[str, int]) -> float:
    """Embedded texts as a share of all the space's texts (1.0 for a space with none)."""
    total = sum(counts.values())
    return counts.get("embedded", 0) / total if total else 1.0


def rollback(engine: Engine) -> int:
    """Reactivate the most recently retired space; the current active one is retired (and kept)."""
    now = time.time()
    with write_transaction(engine) as connection:
        retired = sorted(
            spaces.in_state(connection, SpaceState.RETIRED), key=lambda s: s.retired_at or 0, reverse=True
        )
        if not retired:
            raise InputError("no retired space to roll back to (dropped already?)")
        for space in spaces.in_state(connection, SpaceState.ACTIVE):
            spaces.set_state(connection, space.id, SpaceState.RETIRED, now)
        spaces.set_state(connection, retired[0].id, SpaceState.ACTIVE, now)
        return retired[0].id


def drop_retired(engine: Engine) -> list[int]:
    """Drop retired spaces (vector tables, tasks, jobs), then VACUUM so the file gives the space back:
    sqlite-vec never reclaims deleted rows, so whole tables go."""
    with write_transaction(engine) as connection:
        dropped = [space.id for space in spaces.in_state(connection, SpaceState.RETIRED)]
        for space_id in dropped:
            spaces.delete(connection, space_id)
    if dropped:
        # VACUUM cannot run inside a transaction (on either database): an autocommit connection it is.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            if connection.dialect.name == "sqlite":
                connection.connection.dbapi_connection.execute("VACUUM")  # type: ignore[union-attr]
            else:
                connection.exec_driver_sql("VACUUM")
    return dropped
