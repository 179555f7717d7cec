"""The cost ledger: tokens and dollars per applied batch job, online call and embedded question, and the
budget guard that stops new spending at a cap.

Dollars are at the price actually paid (batch or online) next to what the same tokens would have cost
online; the difference is what the Batch API saved.
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from kb.settings import KbSettings
from kb.store import readmodel
from kb.store.reader import ConnectionReader
from kb.store.readmodel import DAY_S as DAY_S
from kb.store.readmodel import Spend
from kb.store.schema import BatchJob, Meta, UsageRecord, table_of

# Kinds of usage rows. LOST: a batch job's results, paid for, that the service never handed over (refused
# until they expired); its texts are paid again by a later job.
BATCH, LOST = "batch", "lost"
USAGE = table_of(UsageRecord)
JOBS = table_of(BatchJob)
# kb's token estimates run below the service's counts (by about 7% on English prose): a cap is checked
# against estimates raised by this margin, or by the excess billing has shown, if that is larger.
ESTIMATE_MARGIN = 1.10


@dataclass(frozen=True, slots=True)
class Prices:
    """US dollars per million input tokens, or None where the price is unknown."""

    online: float | None
    batch: float | None


@dataclass(frozen=True, slots=True)
class PriceBook:
    by_model: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    output_by_model: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # generation models

    @classmethod
    def from_settings(cls, settings: KbSettings) -> "PriceBook":
        return cls(settings.model_prices, settings.output_prices)

    def prices(self, model: str) -> Prices:
        found = self.by_model.get(model)
        return Prices(None, None) if found is None else Prices(online=found[0], batch=found[1])

    def cost(self, model: str, tokens: int, batch: bool, output_tokens: int = 0) -> tuple[float, float]:
        """(dollars at the price paid, dollars at the online price) of `tokens` in (and, for generation
        models, `output_tokens` out); unknown prices count as 0."""
        prices, output = self.prices(model), self.output_prices(model)
        online = ((prices.online or 0.0) * tokens + (output.online or 0.0) * output_tokens) / 1e6
        paid = ((prices.batch or 0.0) * tokens + (output.batch or 0.0) * output_tokens) / 1e6
        return (paid if batch else online), online

    def output_prices(self, model: str) -> Prices:
        """Per million output tokens (generation models only)."""
        found = self.output_by_model.get(model)
        return Prices(None, None) if found is None else Prices(online=found[0], batch=found[1])


@dataclass(frozen=True, slots=True)
class Quote:
    """The price of some work before it is done."""

    model: str
    usd_batch: float | None
    usd_online: float | None
    jobs: int


def quote(prices: PriceBook, model: str, tokens: int, texts: int, texts_per_job: int) -> Quote:
    """What embedding `texts` texts of `tokens` tokens in `model` would cost, and in how many batch jobs."""
    found = prices.prices(model)
    return Quote(
        model=model,
        usd_batch=None if found.batch is None else found.batch * tokens / 1e6,
        usd_online=None if found.online is None else found.online * tokens / 1e6,
        jobs=-(-texts // texts_per_job),
    )


def record(
    connection: Connection,
    prices: PriceBook,
    *,
    kind: str,
    model: str,
    texts: int,
    tokens: int,
    tokens_reported: bool = False,
    space_id: int | None = None,
    job_id: int | None = None,
    now: float | None = None,
    output_tokens: int = 0,
) -> None:
    usd, online = prices.cost(model, tokens, batch=kind in (BATCH, LOST), output_tokens=output_tokens)
    if kind == LOST:
        online = 0.0  # nothing was embedded for it: it takes from what the Batch API saved
    connection.execute(
        insert(USAGE).values(
            kind=kind,
            space_id=space_id,
            model=model,
            job_id=job_id,
            texts=texts,
            tokens=tokens,
            output_tokens=output_tokens,
            tokens_reported=tokens_reported,
            usd=usd,
            usd_online_equivalent=online,
            created_at=time.time() if now is None else now,
        )
    )


def spend(connection: Connection, since: float | None = None) -> Spend:
    return readmodel.spend(ConnectionReader(connection), since)


@dataclass(frozen=True, slots=True)
class Budget:
    """Spending caps in US dollars (None: no cap)."""

    total_usd: float | None = None
    per_day_usd: float | None = None

    @classmethod
    def from_settings(cls, settings: KbSettings) -> "Budget":
        return cls(settings.max_spend_usd, settings.max_spend_usd_per_day)

    @property
    def capped(self) -> bool:
        return self.total_usd is not None or self.per_day_usd is not None

    def refusal(self, connection: Connection, extra_usd: float, now: float | None = None) -> str | None:
        """Why spending `extra_usd` more now (by kb's estimates) would break a cap, or None if not."""
        extra_usd *= estimate_margin(connection)
        if self.total_usd is not None:
            spent = spend(connection).usd
            if spent + extra_usd > self.total_usd:
                return (
                    f"budget reached: ${spent:,.4f} spent of KB_MAX_SPEND_USD=${self.total_usd:,.2f} "
                    f"(the next job would cost ${extra_usd:,.4f}); raise the cap to continue"
                )
        if self.per_day_usd is not None:
            day_start = (time.time() if now is None else now) - DAY_S
            spent = spend(connection, since=day_start).usd
            if spent + extra_usd > self.per_day_usd:
                return (
                    f"daily budget reached: ${spent:,.4f} spent in the last 24 h of "
                    f"KB_MAX_SPEND_USD_PER_DAY=${self.per_day_usd:,.2f}; submissions resume as it frees up"
                )
        return None


def estimate_margin(connection: Connection) -> float:
    """What an estimated cost is multiplied by before a cap is checked: `ESTIMATE_MARGIN`, or tokens billed
    per token estimated over the batch jobs the service counted, when billing has shown more."""
    billed, estimated = connection.execute(
        select(func.sum(USAGE.c.tokens), func.sum(JOBS.c.token_estimate))
        .select_from(USAGE.join(JOBS, JOBS.c.id == USAGE.c.job_id))
        .where(USAGE.c.kind == "batch", USAGE.c.tokens_reported.is_(True))
    ).one()
    observed = billed / estimated if billed and estimated else 0.0
    return max(ESTIMATE_MARGIN, float(observed))


def set_block(connection: Connection, reason: str | None) -> None:
    """Remember why submissions are stopped (None: they are not), for `kb status`."""
    meta = table_of(Meta)
    connection.execute(meta.delete().where(meta.c.key == readmodel.BUDGET_BLOCK_KEY))
    if reason is not None:
        connection.execute(insert(meta).values(key=readmodel.BUDGET_BLOCK_KEY, value=reason))


def block(connection: Connection) -> str | None:
    return readmodel.budget_block(ConnectionReader(connection))
