"""Models as data: one table of what kb knows about each, which drives its behaviour.

Embedding models (`MODELS`): dimensions, input limit, Batch API support, how a model is told what a text is
for (a `task_type` field, or a prompt prefix in the text), whether vectors below full size come back unit
length, prices, and where it stands in its life. Sources (checked 2026-11): ai.google.dev/gemini-api/docs/
embeddings, /pricing and /deprecations; see docs/gemini.md. Settings override prices, and the lists of
retired and batch-refusing models, without a new release.

Text generation models (`GENERATION_MODELS`, for the situating context of chunks): limits, prices per
million input and output tokens online and in batch, and where each stands in its life, each row with
its sources (checked 2026-12). The Batch API costs "50% of the standard cost" (ai.google.dev/gemini-api/
docs/batch-api): batch prices are half the online ones where no batch price was found printed.
"""

from dataclasses import dataclass
from typing import Literal

TaskStyle = Literal["task_type", "prefix", "none"]
Lifecycle = Literal["stable", "retired"]


@dataclass(frozen=True, slots=True)
class ModelFacts:
    name: str
    provider: str  # "gemini" or "local"
    dims_min: int
    dims_max: int  # the native size: the only one some models return unit length
    dims_default: int  # what kb asks for (768 for Gemini: the recommended size, 4x smaller than native)
    input_tokens: int  # the input limit per text
    batch: bool  # served by the Batch API (asyncBatchEmbedContent)
    task_style: TaskStyle  # how a document and a query are told apart
    unit_below_full: bool  # vectors below dims_max come back unit length (kb normalises anyway)
    usd_online: float | None  # per million input tokens
    usd_batch: float | None
    lifecycle: Lifecycle = "stable"
    shut_down: str | None = None  # date the service stopped answering
    successor: str | None = None

    def check_dimensions(self, dimensions: int) -> str | None:
        """Why `dimensions` cannot be asked of this model, or None."""
        if self.dims_min <= dimensions <= self.dims_max:
            return None
        return f"{self.name} returns {self.dims_min} to {self.dims_max} dimensions, not {dimensions}"


MODELS: dict[str, ModelFacts] = {
    facts.name: facts
    for facts in (
        ModelFacts(
            "gemini-embedding-001",
            "gemini",
            dims_min=128,
            dims_max=3072,
            dims_default=768,
            input_tokens=2048,
            batch=True,
            task_style="task_type",
            unit_below_full=False,  # "For other dimensions ... you need to normalize the embeddings"
            usd_online=0.15,
            usd_batch=0.075,
            successor="gemini-embedding-2",
        ),
        ModelFacts(
            "gemini-embedding-2",
            "gemini",
            dims_min=128,
            dims_max=3072,
            dims_default=768,
            input_tokens=8192,
            batch=True,
            task_style="prefix",  # no task_type: "task: search result | query: ...", "title: ... | text: ..."
            unit_below_full=True,
            usd_online=0.20,
            usd_batch=0.10,
        ),
        ModelFacts(
            "text-embedding-004",
            "gemini",
            dims_min=1,
            dims_max=768,
            dims_default=768,
            input_tokens=2048,
            batch=False,
            task_style="task_type",
            unit_below_full=False,
            usd_online=None,
            usd_batch=None,
            lifecycle="retired",
            shut_down="2026-01-14",
            successor="gemini-embedding-001",
        ),
        ModelFacts(
            "embedding-001",
            "gemini",
            dims_min=768,
            dims_max=768,
            dims_default=768,
            input_tokens=2048,
            batch=False,
            task_style="task_type",
            unit_below_full=False,
            usd_online=None,
            usd_batch=None,
            lifecycle="retired",
            shut_down="2025-10-30",
            successor="gemini-embedding-001",
        ),
        ModelFacts(
            "embedding-gecko-001",
            "gemini",
            dims_min=768,
            dims_max=768,
            dims_default=768,
            input_tokens=1024,
            batch=False,
            task_style="none",
            unit_below_full=False,
            usd_online=None,
            usd_batch=None,
            lifecycle="retired",
            shut_down="2025-10-30",
            successor="gemini-embedding-001",
        ),
        ModelFacts(
            "wordllama-l2-supercat",
            "local",
            dims_min=256,
            dims_max=256,
            dims_default=256,
            input_tokens=1_000_000,
            batch=True,  # kb's in-process runner
            task_style="none",
            unit_below_full=True,
            usd_online=0.0,
            usd_batch=0.0,
        ),
    )
}

# Prompt prefixes of models that take them instead of a task_type (documented forms). A document has no
# title here: kb embeds each distinct text once, whichever documents hold it.
QUERY_PREFIX = "task: search result | query: "
DOCUMENT_PREFIX = "title: none | text: "


def facts(model: str) -> ModelFacts | None:
    return MODELS.get(model.removeprefix("models/"))


def default_prices() -> dict[str, tuple[float, float]]:
    """(online, batch) US dollars per million input tokens of every model whose prices are known."""
    embedding = {
        m.name: (m.usd_online, m.usd_batch)
        for m in MODELS.values()
        if m.usd_online is not None and m.usd_batch is not None
    }
    generation = {
        m.name: (m.usd_online_input, m.usd_batch_input)
        for m in GENERATION_MODELS.values()
        if m.usd_online_input is not None and m.usd_batch_input is not None
    }
    return embedding | generation


def batch_refusing() -> list[str]:
    return [m.name for m in MODELS.values() if m.provider == "gemini" and not m.batch]


def retired() -> list[str]:
    return [m.name for m in MODELS.values() if m.lifecycle == "retired"]


def document_text(model: str, text: str) -> str:
    """What is sent to embed `text` as a document with `model`."""
    known = facts(model)
    return DOCUMENT_PREFIX + text if known is not None and known.task_style == "prefix" else text


def query_text(model: str, text: str) -> str:
    known = facts(model)
    return QUERY_PREFIX + text if known is not None and known.task_style == "prefix" else text


def takes_task_type(model: str) -> bool:
    """Whether requests for `model` carry a task_type (unknown models: yes, as gemini-embedding-001)."""
    known = facts(model)
    return known is None or known.task_style == "task_type"


# -- text generation models ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GenerationFacts:
    name: str
    input_tokens: int  # the context window
    output_tokens: int  # the most maxOutputTokens may ask
    batch: bool  # served by the Batch API (batchGenerateContent)
    usd_online_input: float | None  # per million tokens (prompts up to 200k tokens)
    usd_online_output: float | None  # per million tokens, thinking tokens included
    usd_batch_input: float | None
    usd_batch_output: float | None
    sources: tuple[str, ...]
    lifecycle: Lifecycle = "stable"
    shut_down: str | None = None  # the announced (earliest) shutdown date; past it, a "retired" model
    successor: str | None = None


_PRICING = "https://ai.google.dev/gemini-api/docs/pricing"
_DEPRECATIONS = "https://ai.google.dev/gemini-api/docs/deprecations"
_BATCH = "https://ai.google.dev/gemini-api/docs/batch-api"

GENERATION_MODELS: dict[str, GenerationFacts] = {
    facts.name: facts
    for facts in (
        # Online $0.10 / $0.40: the pricing page as transcribed on 2026-09-20 (github.com/api-evangelist/
        # gemini, plans/gemini-plans-pricing.yml, "found verbatim in the fetched page"). Batch: half.
        # Limits: ai.google.dev/gemini-api/docs/models/gemini-2.5-flash-lite. Shutdown: the deprecations
        # page listed "July 22, 2026" (earliest) until mid-2026; read on 2026-11-10 it says 2.5 Flash-Lite
        # "is not deprecated and remains available through the API until further notice" (quoted by
        # dev.to/aideprecations): no date is published now.
        GenerationFacts(
            "gemini-2.5-flash-lite",
            input_tokens=1_048_576,
            output_tokens=65_536,
            batch=True,
            usd_online_input=0.10,
            usd_online_output=0.40,
            usd_batch_input=0.05,
            usd_batch_output=0.20,
            sources=(
                _PRICING,
                _BATCH,
                "https://ai.google.dev/gemini-api/docs/models/gemini-2.5-flash-lite",
                "https://dev.to/aideprecations/what-to-do-before-gemini-25-pro-and-25-flash-are-retired-on-december-1-2026-5gg9",
            ),
        ),
        # Online $0.30 / $2.50 (text): the same transcription of the pricing page. Shutdown 2026-12-01,
        # replacement gemini-3.5-flash-lite: the deprecations page as read on 2026-11-10 (dev.to/
        # aideprecations), which adds that requests are then routed to gemini-3.5-flash-lite and billed at
        # its rates; earlier versions of the page said "June 17, 2026". Not checked on the page itself.
        GenerationFacts(
            "gemini-2.5-flash",
            input_tokens=1_048_576,
            output_tokens=65_536,
            batch=True,
            usd_online_input=0.30,
            usd_online_output=2.50,
            usd_batch_input=0.15,
            usd_batch_output=1.25,
            sources=(
                _PRICING,
                _BATCH,
                _DEPRECATIONS,
                "https://dev.to/aideprecations/what-to-do-before-gemini-25-pro-and-25-flash-are-retired-on-december-1-2026-5gg9",
            ),
            lifecycle="retired",
            shut_down="2026-12-01",
            successor="gemini-3.5-flash-lite",
        ),
        # Released 2026-05-07, earliest shutdown 2027-05-07: the deprecations page. Prices $0.25 / $1.50
        # and the limits from third parties only (vercel.com/ai-gateway/models/gemini-3.1-flash-lite,
        # docs.apiyi.com): not found on Google's pricing page in the stored copies. Batch: half.
        GenerationFacts(
            "gemini-3.1-flash-lite",
            input_tokens=1_048_576,
            output_tokens=65_536,
            batch=True,
            usd_online_input=0.25,
            usd_online_output=1.50,
            usd_batch_input=0.125,
            usd_batch_output=0.75,
            sources=(_DEPRECATIONS, _BATCH, "https://vercel.com/ai-gateway/models/gemini-3.1-flash-lite"),
            shut_down="2027-05-07",
        ),
        # Released 2026-07-21, no shutdown announced: the deprecations page; the named replacement of
        # gemini-2.5-flash. Limits and Batch API support: ai.google.dev/gemini-api/docs/models/gemini-3.5-
        # flash-lite. Prices $0.30 / $2.50 from third parties only (docs.sim.ai, docs.apiyi.com): not
        # found on Google's pricing page in the stored copies. Batch: half.
        GenerationFacts(
            "gemini-3.5-flash-lite",
            input_tokens=1_048_576,
            output_tokens=65_536,
            batch=True,
            usd_online_input=0.30,
            usd_online_output=2.50,
            usd_batch_input=0.15,
            usd_batch_output=1.25,
            sources=(
                _DEPRECATIONS,
                _BATCH,
                "https://ai.google.dev/gemini-api/docs/models/gemini-3.5-flash-lite",
                "https://docs.sim.ai/models/google/gemini-3-5-flash-lite",
            ),
        ),
    )
}


def generation_facts(model: str) -> GenerationFacts | None:
    return GENERATION_MODELS.get(model.removeprefix("models/"))


def default_output_prices() -> dict[str, tuple[float, float]]:
    """(online, batch) US dollars per million output tokens of generation models whose prices are known."""
    return {
        m.name: (m.usd_online_output, m.usd_batch_output)
        for m in GENERATION_MODELS.values()
        if m.usd_online_output is not None and m.usd_batch_output is not None
    }
