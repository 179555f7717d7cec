"""Enrich: have a Gemini generation model write a short context for every chunk (contextual retrieval),
through the batch ledger at batch price, for spaces that embed chunks situated by it (`kb reindex
--contexts`).

`estimate` says what it would cost before anything is sent (only contexts not written yet count);
`start` makes the model's context space the one being filled and queues every missing context. The worker
does the rest: jobs, polling, results saved before they are applied, per-chunk errors retried, then the
chunks' situated inputs queued for embedding.
"""

import math
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from kb.core import contexts as prompt
from kb.core import models
from kb.store import contexts, tasks
from kb.store.engine import write_transaction
from kb.store.usage import PriceBook

WHOLE_DOCUMENT = 10**9  # a window no document exceeds: what sending each chunk its whole document costs


@dataclass(frozen=True, slots=True)
class Estimate:
    model: str
    window_tokens: int
    chunks: int  # distinct chunk contexts the knowledge base has
    already_written: int
    to_write: int
    input_tokens: int
    output_tokens: int  # kb's allowance per context (OUTPUT_ESTIMATE), before the service reports usage
    whole_document_tokens: int  # the input tokens if every request carried its whole document
    usd_batch: float | None
    usd_online: float | None
    jobs: int
    shut_down: str | None  # the model's announced shutdown date, if any
    calibrated: bool = False  # tokens scaled by what the service billed for this model's contexts so far

    @property
    def window_share(self) -> float:
        """The bounded window's input as a share of whole documents'."""
        return self.input_tokens / self.whole_document_tokens if self.whole_document_tokens else 1.0


def estimate(
    engine: Engine, model: str, window_tokens: int, prices: PriceBook, texts_per_job: int
) -> Estimate:
    with engine.connect() as connection:
        sizes = contexts.request_sizes(connection)
        wanted = contexts.requests(sizes, window_tokens)
        whole = contexts.requests(sizes, WHOLE_DOCUMENT)
        existing = contexts.find(connection, model)
        done = tasks.embedded_among(connection, existing.id, set(wanted)) if existing else set()
        history = contexts.billed(connection, model)
    needed = [key for key in wanted if key not in done]
    input_tokens = sum(wanted[key] for key in needed)
    whole_tokens = sum(whole[key] for key in needed)
    output_tokens = len(needed) * prompt.OUTPUT_ESTIMATE
    calibrated = history.contexts > 0 and history.estimated_input > 0
    if calibrated:  # what the service billed for this model's contexts so far says how far off kb is
        factor = history.input_tokens / history.estimated_input
        input_tokens, whole_tokens = round(input_tokens * factor), round(whole_tokens * factor)
        output_tokens = round(len(needed) * history.output_tokens / history.contexts)
    found, output = prices.prices(model), prices.output_prices(model)
    known = found.batch is not None and output.batch is not None
    facts = models.GENERATION_MODELS.get(model)
    return Estimate(
        model=model,
        window_tokens=window_tokens,
        chunks=len(wanted),
        already_written=len(done),
        to_write=len(needed),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        whole_document_tokens=whole_tokens,
        usd_batch=prices.cost(model, input_tokens, True, output_tokens)[0] if known else None,
        usd_online=prices.cost(model, input_tokens, False, output_tokens)[0] if known else None,
        jobs=math.ceil(len(needed) / texts_per_job) if needed else 0,
        shut_down=facts.shut_down if facts else None,
        calibrated=calibrated,
    )


def start(engine: Engine, model: str, window_tokens: int) -> tuple[int, tasks.QueueResult]:
    """The model's context space, filled from now on, with every missing context queued."""
    with write_transaction(engine) as connection:
        space_id = contexts.start(connection, model)
        return space_id, contexts.queue_all(connection, space_id, window_tokens)
