"""Embedding models as data: one table of what kb knows about each, which drives its behaviour.

Dimensions, input limit, Batch API support, how a model is told what a text is for (a `task_type` field,
or a prompt prefix in the text), whether vectors below full size come back unit length, prices, and where
it stands in its life. Sources (checked 2026-11): ai.google.dev/gemini-api/docs/embeddings, /pricing and
/deprecations; see docs/gemini.md. Settings override prices, and the lists of retired and batch-refusing
models, without a new release.
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
    """(online, batch) US dollars per million tokens of every model whose prices are known."""
    return {
        m.name: (m.usd_online, m.usd_batch)
        for m in MODELS.values()
        if m.usd_online is not None and m.usd_batch is not None
    }


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


def default_output_prices() -> dict[str, tuple[float, float]]:
    """(online, batch) US dollars per million output tokens of generation models whose prices are known."""
    return {}
