"""Online embedding of pending tasks (`kb ingest --now`): full price, searchable at once.

Texts go to the provider in groups; each group's vectors and task statuses are written in one transaction, so
an interruption loses at most the group in flight, and nothing is written twice (only tasks still pending are
marked embedded and get vectors).
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from kb import tasks, usage, vectors
from kb.db import write_transaction
from kb.embedder import Embedder
from kb.errors import KbError, RetryableProviderError

GROUP_SIZE = 500
# After a failed online attempt, leave the texts to the batch worker for a while.
_RETRY_AFTER_S = 300.0


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
    """Embed the space's pending tasks (or only those for `hashes`) online, group by group, within budget."""
    report = OnlineReport()
    prices = prices or usage.PriceBook()
    budget = budget or usage.Budget()
    model = embedder.spec.model
    with engine.connect() as connection:
        todo = tasks.pending_texts(connection, space_id, hashes, limit=10**9)
    for start in range(0, len(todo), GROUP_SIZE):
        group = todo[start : start + GROUP_SIZE]
        cost, _ = prices.cost(model, sum(item.token_estimate for item in group), batch=False)
        with engine.connect() as connection:
            refusal = budget.refusal(connection, cost)
        if refusal:
            report.errors.append(refusal)
            break
        try:
            matrix = embedder.embed_documents([item.text for item in group])
        except KbError as error:
            _record_failure(engine, group, error)
            report.errors.append(error.message)
            if not isinstance(error, RetryableProviderError):
                break
            continue
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
        if on_progress is not None:
            on_progress(min(start + GROUP_SIZE, len(todo)), len(todo))
    report.left_pending = len(todo) - report.embedded
    return report


def _record_failure(engine: Engine, group: Sequence[tasks.PendingText], error: KbError) -> None:
    now = time.time()
    with write_transaction(engine) as connection:
        tasks.record_attempt_failure(
            connection, [item.task_id for item in group], error.message, now + _RETRY_AFTER_S, now
        )
