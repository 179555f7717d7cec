"""Online embedding of pending tasks (`kb ingest --now`): full price, searchable at once.

Texts go to the provider in groups; each group's vectors and task statuses are written in one transaction, so
an interruption loses at most the group in flight, and nothing is written twice (only tasks still pending are
marked embedded and get vectors).
"""

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from kb import tasks, usage, vectors
from kb.db import write_transaction
from kb.embedder import Embedder
from kb.errors import KbError, RetryableProviderError
from kb.store import in_batches

GROUP_SIZE = 500
# After a failed online attempt, leave the texts to the batch worker for a while.
_RETRY_AFTER_S = 300.0
# A claimed group is not due for anyone else this long: far beyond one call with its retries.
_HOLD_S = 600.0


@dataclass(slots=True)
class OnlineReport:
    embedded: int = 0
    tokens: int = 0
    left_pending: int = 0
    errors: list[str] = field(default_factory=list)


def embed_pending(
    engine: Engine,
    embedder: Embedder,
    space_id: int,
    hashes: Sequence[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    prices: usage.PriceBook | None = None,
    budget: usage.Budget | None = None,
) -> OnlineReport:
    """Embed the space's due pending tasks (or only those for `hashes`) online, group by group, within
    budget. Each group is claimed first, so concurrent embedders and batch flushes never pay for it twice."""
    report = OnlineReport()
    prices = prices or usage.PriceBook()
    budget = budget or usage.Budget()
    hash_groups: list[Sequence[str] | None] = (
        [None] if hashes is None else list(in_batches(hashes, GROUP_SIZE))
    )
    with engine.connect() as connection:
        total = sum(tasks.due_count(connection, space_id, time.time(), group) for group in hash_groups)
    done = 0
    for group in _claimed_groups(engine, space_id, hash_groups):
        done += len(group)
        if not _embed_group(engine, embedder, space_id, group, prices, budget, report):
            break
        if on_progress is not None:
            on_progress(min(done, total), total)
    report.left_pending = max(0, total - report.embedded)
    return report


def _claimed_groups(
    engine: Engine, space_id: int, hash_groups: Sequence[Sequence[str] | None]
) -> Iterator[list[tasks.PendingText]]:
    """Claim one group at a time, only when the previous one is done (a stop leaves the rest unclaimed)."""
    for hashes in hash_groups:
        while group := _claim(engine, space_id, hashes):
            yield group
            if hashes is not None:
                break  # a group of hashes is claimed whole, in one round


def _claim(engine: Engine, space_id: int, hashes: Sequence[str] | None) -> list[tasks.PendingText]:
    with write_transaction(engine) as connection:
        return tasks.claim_due(connection, space_id, time.time(), _HOLD_S, GROUP_SIZE, hashes)


def _unclaim(engine: Engine, group: Sequence[tasks.PendingText]) -> None:
    """Give a claimed group back untouched (the budget stopped it before any call)."""
    now = time.time()
    with write_transaction(engine) as connection:
        tasks.make_due(connection, [item.task_id for item in group], now)


def _embed_group(
    engine: Engine,
    embedder: Embedder,
    space_id: int,
    group: Sequence[tasks.PendingText],
    prices: usage.PriceBook,
    budget: usage.Budget,
    report: OnlineReport,
) -> bool:
    """Embed one claimed group and write it; False when embedding should stop here (budget, hard error)."""
    model = embedder.spec.model
    cost, _ = prices.cost(model, sum(item.token_estimate for item in group), batch=False)
    with engine.connect() as connection:
        refusal = budget.refusal(connection, cost)
    if refusal:
        _unclaim(engine, group)
        report.errors.append(refusal)
        return False
    try:
        matrix = embedder.embed_documents([item.text for item in group])
    except KbError as error:
        _record_failure(engine, group, error)
        report.errors.append(error.message)
        return isinstance(error, RetryableProviderError)
    now = time.time()
    with write_transaction(engine) as connection:
        written = set(tasks.mark_embedded(connection, space_id, [i.task_id for i in group], now))
        rows = [(item.task_id, matrix[n]) for n, item in enumerate(group) if item.task_id in written]
        vectors.write(connection, space_id, rows)
        tokens = sum(item.token_estimate for item in group if item.task_id in written)
        if rows:
            usage.record(
                connection,
                prices,
                kind="online",
                model=model,
                texts=len(rows),
                tokens=tokens,
                space_id=space_id,
                now=now,
            )
    report.embedded += len(rows)
    report.tokens += tokens
    return True


def _record_failure(engine: Engine, group: Sequence[tasks.PendingText], error: KbError) -> None:
    now = time.time()
    with write_transaction(engine) as connection:
        tasks.record_attempt_failure(
            connection, [item.task_id for item in group], error.message, now + _RETRY_AFTER_S, now
        )
