"""Online embedding of pending tasks (`kb ingest --now`, and models the Batch API refuses): full price,
searchable at once.

Texts are claimed a group at a time, so that no batch flush or other embedder pays for them meanwhile, and
sent in the requests the provider plans (Gemini: at most 100 texts and ~3 MB each). Each request's vectors
are committed the moment they arrive: a failure later in the group never throws a paid vector away.

A request the service refuses as invalid is split in two until the text at fault is alone (a refused
request is not billed); that text fails with the service's message (a dead letter: `kb errors`) and the
others are embedded. A request that fails for any other reason counts an attempt on its texts, which wait
out a back-off (`KB_TASK_RETRY_BASE_S`, doubling) and fail after `KB_TASK_MAX_ATTEMPTS`, as in batch jobs.
A refused API key stops everything at once and burns no attempt: it is a configuration error.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from kb import failpoints
from kb.embed.policy import OnlinePolicy
from kb.errors import InvalidRequestError, ProviderError
from kb.providers.base import Embedder, Matrix
from kb.store import tasks, usage, vectors
from kb.store.documents import in_batches
from kb.store.engine import write_transaction

log = logging.getLogger("kb.embed.online")

GROUP_SIZE = 500


@dataclass(slots=True)
class OnlineReport:
    embedded: int = 0
    tokens: int = 0
    failed: int = 0  # texts that failed for good (dead letters)
    left_pending: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Run:
    engine: Engine
    embedder: Embedder
    space_id: int
    prices: usage.PriceBook
    budget: usage.Budget
    policy: OnlinePolicy
    stop: threading.Event
    report: OnlineReport
    clock: Callable[[], float]


def embed_pending(
    engine: Engine,
    embedder: Embedder,
    space_id: int,
    hashes: Sequence[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    prices: usage.PriceBook | None = None,
    budget: usage.Budget | None = None,
    policy: OnlinePolicy | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> OnlineReport:
    """Embed the space's due pending tasks (or only those for `hashes`) online, request by request, within
    budget, until done or `stop` is set (the request in flight is finished and stored first)."""
    report = OnlineReport()
    run = _Run(
        engine,
        embedder,
        space_id,
        prices or usage.PriceBook(),
        budget or usage.Budget(),
        policy or OnlinePolicy(),
        stop or threading.Event(),
        report,
        clock,
    )
    hash_groups: list[Sequence[str] | None] = (
        [None] if hashes is None else list(in_batches(hashes, GROUP_SIZE))
    )
    with engine.connect() as connection:
        total = sum(tasks.due_count(connection, space_id, clock(), group) for group in hash_groups)
    settled = 0
    for group in _claimed_groups(run, hash_groups):
        go_on = _embed_group(run, group)
        settled = report.embedded + report.failed
        if on_progress is not None:
            on_progress(min(settled, total), total)
        if not go_on:
            break
    report.left_pending = max(0, total - settled)
    return report


def _claimed_groups(
    run: _Run, hash_groups: Sequence[Sequence[str] | None]
) -> Iterator[list[tasks.PendingText]]:
    """Claim one group at a time, only when the previous one is done (a stop leaves the rest unclaimed)."""
    for hashes in hash_groups:
        while not run.stop.is_set():
            with write_transaction(run.engine) as connection:
                group = tasks.claim_due(
                    connection, run.space_id, run.clock(), run.policy.hold_s, GROUP_SIZE, hashes
                )
            if not group:
                break
            yield group
            if hashes is not None:
                break  # a group of hashes is claimed whole, in one round


def _embed_group(run: _Run, group: list[tasks.PendingText]) -> bool:
    """Embed a claimed group request by request; False when embedding should stop (budget, stop, outage).
    Whatever is not settled when it returns or raises is given back, due at once."""
    requests: deque[Sequence[int]] = deque(run.embedder.plan_requests([item.text for item in group]))
    unsettled = {item.task_id for item in group}
    try:
        while requests:
            if run.stop.is_set():
                return False
            items = [group[i] for i in requests.popleft()]
            with write_transaction(run.engine) as connection:  # renew the claim on what is left
                tasks.hold(connection, sorted(unsettled), run.clock() + run.policy.hold_s)
            refusal = _over_budget(run, items)
            if refusal:
                run.report.errors.append(refusal)
                return False
            try:
                matrix, counted = _send(run, items)
            except InvalidRequestError as error:
                if len(items) > 1:  # find the text at fault: each half is a request of its own
                    half = len(items) // 2
                    requests.extendleft([_indexes(group, items[half:]), _indexes(group, items[:half])])
                    continue
                _fail(run, items[0], error)
            except ProviderError as error:
                _count_attempt(run, items, error)
                unsettled.difference_update(item.task_id for item in items)
                return False  # the service is failing: the next round tries again, after the back-off
            else:
                _store(run, items, matrix, counted)
            unsettled.difference_update(item.task_id for item in items)
        return True
    finally:
        if unsettled:
            with write_transaction(run.engine) as connection:
                tasks.make_due(connection, sorted(unsettled), run.clock())


def _indexes(group: list[tasks.PendingText], items: list[tasks.PendingText]) -> list[int]:
    position = {item.task_id: n for n, item in enumerate(group)}
    return [position[item.task_id] for item in items]


def _over_budget(run: _Run, items: Sequence[tasks.PendingText]) -> str | None:
    if not run.budget.capped:
        return None
    cost, _ = run.prices.cost(run.embedder.spec.model, sum(i.token_estimate for i in items), batch=False)
    with run.engine.connect() as connection:
        return run.budget.refusal(connection, cost, run.clock())


def _send(run: _Run, items: Sequence[tasks.PendingText]) -> tuple[Matrix, int | None]:
    failpoints.hit("online.request.before")
    answer = run.embedder.embed_counted([item.text for item in items])
    failpoints.hit("online.request.after")
    return answer


def _store(run: _Run, items: Sequence[tasks.PendingText], matrix: Matrix, counted: int | None) -> None:
    """Commit one request's paid vectors, their tasks and their cost, at once. The cost is the service's
    token count where it gives one (what it bills), kb's estimate where it does not."""
    now = run.clock()
    with write_transaction(run.engine) as connection:
        written = set(tasks.mark_embedded(connection, run.space_id, [i.task_id for i in items], now))
        kept = [n for n, item in enumerate(items) if item.task_id in written]
        vectors.write(connection, run.space_id, [items[n].task_id for n in kept], matrix[kept])
        measured = counted is not None
        tokens = (
            counted if counted is not None else sum(i.token_estimate for i in items if i.task_id in written)
        )
        if kept:
            usage.record(
                connection,
                run.prices,
                kind="online",
                model=run.embedder.spec.model,
                texts=len(kept),
                tokens=tokens,
                tokens_reported=measured,
                space_id=run.space_id,
                now=now,
            )
        failpoints.hit("online.commit.before")
    failpoints.hit("online.commit.after")
    run.report.embedded += len(kept)
    run.report.tokens += tokens


def _fail(run: _Run, item: tasks.PendingText, error: ProviderError) -> None:
    """The service refused this one text: a dead letter with its message."""
    with write_transaction(run.engine) as connection:
        failed = tasks.mark_failed(connection, [item.task_id], f"refused: {error.message}", run.clock())
    run.report.failed += failed
    run.report.errors.append(error.message)
    log.warning("text %s refused for good: %s", item.task_id, error.message)


def _count_attempt(run: _Run, items: Sequence[tasks.PendingText], error: ProviderError) -> None:
    """A request failed (after its own retries): an attempt counted on each text, then a back-off."""
    now = run.clock()
    counted = [(item.task_id, item.attempts) for item in items]
    with write_transaction(run.engine) as connection:
        failed = tasks.record_attempt_failure(
            connection, counted, error.message, now, run.policy.max_attempts, run.policy.retry
        )
    run.report.failed += failed
    run.report.errors.append(error.message)
    log.warning("%d texts not embedded this time (%s); %d failed for good", len(items), error.message, failed)
