"""The model registry: which models exist (embedding and text generation), their limits, batch support,
shutdown."""

import threading
from dataclasses import dataclass
from typing import Literal

ModelKind = Literal["embedding", "generation"]
# The methods each kind serves; any other method on the model is a 404, as live ("... or is not supported
# for embedContent").
EMBEDDING_METHODS = frozenset({"embedContent", "countTokens", "asyncBatchEmbedContent", "get"})
GENERATION_METHODS = frozenset({"generateContent", "countTokens", "batchGenerateContent", "get"})


def bare_model_name(name: str) -> str:
    return name.removeprefix("models/")


@dataclass
class ModelRule:
    """How one model behaves. `max_dims` is its native size: only vectors of that size are unit length,
    unless `normalises` (gemini-embedding-2 normalises every size; -001 only its 3072). The live service
    accepted output_dimensionality 3 and 4 (gemini-wire.md §9), so the smallest size is 1, not the
    documented 128."""

    name: str
    batch: bool = True
    shutdown: bool = False
    default_dims: int = 3072
    min_dims: int = 1
    max_dims: int = 3072
    max_input_tokens: int = 2048
    display_name: str = ""
    # gemini-embedding-2 takes no task_type (prompt prefixes instead): a request carrying one is refused.
    task_types: bool = True
    # Online answers carry usageMetadata.promptTokenCount, and batch result lines carry it too (emb-2).
    reports_usage: bool = False
    normalises: bool = False
    # A text generation model (generateContent, batchGenerateContent) instead of an embedding model.
    kind: ModelKind = "embedding"
    max_output_tokens: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min_dims <= self.default_dims <= self.max_dims:
            raise ValueError(f"{self.name}: need 1 <= min_dims <= default_dims <= max_dims")

    def serves(self, method: str) -> bool:
        return method in (GENERATION_METHODS if self.kind == "generation" else EMBEDDING_METHODS)


def generation_rule(name: str, display_name: str = "", *, batch: bool = True) -> ModelRule:
    """A text model: 1,048,576 input and 65,536 output tokens (the limits of gemini-2.5-flash-lite and
    gemini-2.5-flash on ai.google.dev/gemini-api/docs/models)."""
    return ModelRule(
        name,
        batch=batch,
        max_input_tokens=1_048_576,
        display_name=display_name,
        kind="generation",
        max_output_tokens=65_536,
    )


def default_rules() -> list[ModelRule]:
    return [
        ModelRule("gemini-embedding-001", display_name="Gemini Embedding 001"),
        ModelRule(
            "gemini-embedding-2",
            max_input_tokens=8192,
            display_name="Gemini Embedding 2",
            task_types=False,
            reports_usage=True,
            normalises=True,
        ),
        # Shut down live on 2026-01-14, but served here until `shut_down`, so tests can migrate away from it.
        ModelRule(
            "text-embedding-004",
            batch=False,
            default_dims=768,
            min_dims=1,
            max_dims=768,
            display_name="Text Embedding 004",
        ),
        generation_rule("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite"),
        generation_rule("gemini-2.5-flash", "Gemini 2.5 Flash"),
    ]


class ModelRegistry:
    """Models by bare name (`models/` is stripped everywhere)."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._rules = {rule.name: rule for rule in default_rules()}

    def add(
        self,
        name: str,
        *,
        batch: bool = True,
        shutdown: bool = False,
        default_dims: int = 3072,
        max_dims: int | None = None,
        min_dims: int | None = None,
        max_input_tokens: int = 2048,
        kind: ModelKind = "embedding",
    ) -> ModelRule:
        """Adds or replaces a model. `max_dims` defaults to `default_dims`; `min_dims` to 1. A generation
        model (`kind="generation"`) has the limits of `generation_rule`."""
        if kind == "generation":
            rule = generation_rule(bare_model_name(name), batch=batch)
            rule.shutdown = shutdown
        else:
            native = default_dims if max_dims is None else max_dims
            rule = ModelRule(
                name=bare_model_name(name),
                batch=batch,
                shutdown=shutdown,
                default_dims=default_dims,
                min_dims=1 if min_dims is None else min_dims,
                max_dims=native,
                max_input_tokens=max_input_tokens,
            )
        with self._lock:
            self._rules[rule.name] = rule
        return rule

    def shut_down(self, name: str) -> None:
        """From now on every call for this model answers 404 NOT_FOUND, as for a retired model."""
        with self._lock:
            self._require(name).shutdown = True

    def restore(self, name: str) -> None:
        with self._lock:
            self._require(name).shutdown = False

    def remove(self, name: str) -> None:
        with self._lock:
            self._rules.pop(bare_model_name(name), None)

    def get(self, name: str) -> ModelRule | None:
        """The rule of a model that is served (known and not shut down), else None."""
        with self._lock:
            rule = self._rules.get(bare_model_name(name))
        return None if rule is None or rule.shutdown else rule

    def rule(self, name: str) -> ModelRule | None:
        """The rule of a known model, shut down or not."""
        with self._lock:
            return self._rules.get(bare_model_name(name))

    def served(self) -> list[ModelRule]:
        with self._lock:
            return [rule for rule in self._rules.values() if not rule.shutdown]

    def _require(self, name: str) -> ModelRule:
        rule = self.rule(name)
        if rule is None:
            raise KeyError(f"unknown model {name!r}")
        return rule
