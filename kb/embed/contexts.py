"""Chunk contexts written online (`kb enrich --now`): Gemini's generateContent, one request per chunk, at
the full price, each context committed the moment it arrives.

Requests are claimed a few at a time like online embeddings (kb.embed.online), so no batch flush sends them
meanwhile; a prompt the model will not answer (blocked, stopped for safety, no text) fails for good with
the reason, and a chunk whose context failed is embedded without one; any other failure counts an attempt
and waits out the back-off.
"""

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from kb.embed.online import OnlineReport
from kb.embed.policy import OnlinePolicy
from kb.errors import InvalidRequestError, ProviderError
from kb.providers.base import Generator
from kb.records import Generated
from kb.store import contexts, tasks, usage
from kb.store.engine import write_transaction
from kb.store.spaces import EmbeddingSpace

log = logging.getLogger("kb.embed.contexts")

GROUP_SIZE = 20  # requests claimed at once (each is one chunk's context)


def write_pending(
    engine: Engine,
    generator: Generator,
    space: EmbeddingSpace,
    *,
    window_tokens: int,
    max_output_tokens: int,
    prices: usage.PriceBook,
    budget: usage.Budget,
    policy: OnlinePolicy,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
) -> OnlineReport:
    """Write the context space's due pending contexts online until none is left, the budget refuses, the
    service fails, or `stop` is set (the request in flight is stored first)."""
    report = OnlineReport()
    stop = stop or threading.Event()
    going = True
    while going and not stop.is_set():
        with write_transaction(engine) as connection:
            group = tasks.claim_due(connection, space.id, clock(), policy.hold_s, GROUP_SIZE)
            prompts = contexts.prompts(connection, [item.text_sha256 for item in group], window_tokens)
        if not group:
            break
        unsettled = list(group)
        try:
            while going and unsettled and not stop.is_set():
                item = unsettled.pop(0)
                if budget.capped:
                    cost = prices.cost(space.model, item.token_estimate, False, max_output_tokens)[0]
                    with engine.connect() as connection:
                        refusal = budget.refusal(connection, cost, clock())
                    if refusal:
                        report.errors.append(refusal)
                        unsettled.insert(0, item)
                        going = False
                        break
                going = _write_one(
                    engine, generator, space, item, prompts, max_output_tokens, prices, policy, report, clock
                )
        finally:
            if unsettled:  # claimed, not asked: due again at once
                with write_transaction(engine) as connection:
                    tasks.make_due(connection, [item.task_id for item in unsettled], clock())
    with engine.connect() as connection:
        counts = tasks.counts_by_status(connection, space.id)
    report.left_pending = counts["pending"] + counts["submitted"]
    return report


def _write_one(
    engine: Engine,
    generator: Generator,
    space: EmbeddingSpace,
    item: tasks.PendingText,
    prompts: dict[str, str],
    max_output_tokens: int,
    prices: usage.PriceBook,
    policy: OnlinePolicy,
    report: OnlineReport,
    clock: Callable[[], float],
) -> bool:
    """Ask for one context and settle its task; False when the service is failing (stop for now)."""
    try:
        written = generator.generate(prompts[item.text_sha256], max_output_tokens=max_output_tokens)
    except InvalidRequestError as error:  # this prompt will never be answered: a dead letter
        _settle_failed(engine, space, item, f"refused: {error.message}", clock())
        report.failed += 1
        report.errors.append(error.message)
        return True
    except ProviderError as error:  # an attempt counted, then the back-off; the next run tries again
        with write_transaction(engine) as connection:
            report.failed += tasks.record_attempt_failure(
                connection,
                [(item.task_id, item.attempts)],
                error.message,
                clock(),
                policy.max_attempts,
                policy.retry,
            )
        report.errors.append(error.message)
        return False
    _store(engine, space, item, written, prices, clock())
    report.embedded += 1
    report.tokens += written.input_tokens
    return True


def _store(
    engine: Engine,
    space: EmbeddingSpace,
    item: tasks.PendingText,
    written: Generated,
    prices: usage.PriceBook,
    now: float,
) -> None:
    """One paid context, its task, the chunks it situates, their embedding tasks and its cost, at once."""
    with write_transaction(engine) as connection:
        if not tasks.mark_embedded(connection, space.id, [item.task_id], now):
            return  # settled meanwhile (a batch job applied it): never stored twice
        context = contexts.Written(
            item.text_sha256, written.text.strip(), written.input_tokens, written.output_tokens
        )
        contexts.save(connection, space.id, [context], now)
        contexts.queue_situated(connection, contexts.situate(connection, space.id, [context.key]), now)
        usage.record(
            connection,
            prices,
            kind="online",
            model=space.model,
            texts=1,
            tokens=written.input_tokens,
            tokens_reported=True,
            space_id=space.id,
            now=now,
            output_tokens=written.output_tokens,
        )


def _settle_failed(
    engine: Engine, space: EmbeddingSpace, item: tasks.PendingText, reason: str, now: float
) -> None:
    with write_transaction(engine) as connection:
        tasks.mark_failed(connection, [item.task_id], reason, now)
        contexts.fall_back(connection, space.id, now)
    log.warning("context %s refused for good: %s", item.task_id, reason)
