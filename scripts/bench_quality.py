"""Retrieval quality per labelled corpus: a fresh knowledge base per corpus, provider and variant, ingested,
embedded by the worker, then scored as `kb eval` scores it (file level); Markdown tables for docs/search.md.

    .venv/bin/python scripts/bench_quality.py                                  # every corpus, local model
    .venv/bin/python scripts/bench_quality.py --provider local --provider emulator
    .venv/bin/python scripts/bench_quality.py --variant "no headers:chunk_headers=false"
    .venv/bin/python scripts/bench_quality.py --vector-weights 0.25,0.5,1,2 --cross-validate

Corpora: `handbook` (tests/data), and scripts/corpora/NAME/ for each scripts/corpora/NAME-queries.json.
`--provider emulator` runs the Gemini path (real SDK, Batch API) against kb's own emulator on 127.0.0.1:
its vectors are feature hashing, so they show mechanics (fusion, fallbacks, cost), not Gemini's quality.
A variant is a name and settings (`key=value,...`, as KbSettings fields) for a knowledge base of its own.
`--cross-validate` chooses the hybrid vector weight leaving one corpus out: the weight with the best mean
MRR on the other corpora, scored on the one left out, beside the default weight.
`KB_BENCH_ROOT=/path/to/checkout` measures another checkout's kb (e.g. an older commit) on these corpora.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.environ.get("KB_BENCH_ROOT", str(ROOT)))

from kb.app import KnowledgeBase  # noqa: E402
from kb.records import SearchMode  # noqa: E402
from kb.search import evaluation  # noqa: E402
from kb.settings import KbSettings  # noqa: E402

EMULATOR_KEY = "bench-key-0123456789"
_FAST = {"poll_initial_s": 0.01, "poll_max_s": 0.05, "worker_idle_s": 0.01, "batch_min_texts": 1}


def corpora() -> dict[str, tuple[Path, Path]]:
    found = {"handbook": (ROOT / "tests/data/handbook", ROOT / "tests/data/handbook-queries.json")}
    for queries in sorted((ROOT / "scripts/corpora").glob("*-queries.json")):
        folder = queries.with_name(queries.name.removesuffix("-queries.json"))
        if folder.is_dir():
            found[folder.name] = (folder, queries)
    return found


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    name, _, assignments = text.partition(":")
    values: dict[str, object] = {}
    for assignment in filter(None, assignments.split(",")):
        key, _, value = assignment.partition("=")
        values[key.strip()] = json.loads(value) if value.strip() not in ("", "none") else None
    return name, values


@dataclass
class Row:
    corpus: str
    provider: str
    variant: str
    mode: str
    weight: float | None  # hybrid's vector weight (None: the default)
    at_1: float
    at_5: float
    at_10: float
    mrr: float
    ndcg: float
    fell_back: int
    chunks: int
    texts: int
    tokens: int


@contextlib.contextmanager
def provider_settings(provider: str, db: Path) -> Iterator[dict[str, object]]:
    if provider == "local":
        yield {"db": db, "provider": "local", **_FAST}
        return
    from kb.testing.gemini_emulator import GeminiEmulator

    with GeminiEmulator(api_key=EMULATOR_KEY) as emulator:
        yield {
            "db": db,
            "provider": "gemini",
            "gemini_api_key": EMULATOR_KEY,
            "gemini_base_url": emulator.base_url,
            **_FAST,
        }


def measure(
    corpus: str,
    folder: Path,
    queries_file: Path,
    provider: str,
    variant: str,
    overrides: dict[str, object],
    weights: list[float | None],
) -> list[Row]:
    queries = evaluation.load_queries(queries_file)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as work, provider_settings(provider, Path(work) / "kb.sqlite") as base:
        settings = KbSettings(**{**base, **overrides}, _env_file=None)  # type: ignore[arg-type]
        with KnowledgeBase(settings=settings) as kb:
            report = kb.ingest([folder])
            kb.worker().run(once=True, timeout_s=900)
            with kb.engine.connect() as connection:
                chunks = connection.exec_driver_sql("SELECT count(*) FROM chunks").scalar_one()
        for weight in weights:
            weighted = settings.model_copy(update={"hybrid_vector_weight": weight})
            with KnowledgeBase(settings=weighted) as kb:
                modes = list(SearchMode) if weight is None else [SearchMode.HYBRID]
                for mode in modes:
                    score = evaluation.score(kb, queries, mode)
                    rows.append(
                        Row(
                            corpus,
                            provider,
                            variant,
                            mode.value,
                            weight,
                            score.recall_at(1),
                            score.recall_at(5),
                            score.recall_at(10),
                            score.mrr,
                            score.ndcg,
                            score.fell_back,
                            int(chunks),
                            report.tasks_queued,
                            report.tokens_queued,
                        )
                    )
    return rows


def print_tables(rows: list[Row]) -> None:
    print(
        "| corpus | provider | variant | chunks | texts | tokens | hybrid @1 / @5 / MRR | text @1 / @5 / MRR "
        "| vector @1 / @5 / MRR |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    keyed: dict[tuple[str, str, str], dict[str, Row]] = {}
    for row in rows:
        if row.weight is None:
            keyed.setdefault((row.corpus, row.provider, row.variant), {})[row.mode] = row
    for (corpus, provider, variant), modes in keyed.items():
        first = next(iter(modes.values()))
        cells = [
            f"{m.at_1:.2f} / {m.at_5:.2f} / {m.mrr:.3f}"
            + (f" ({m.fell_back} fell back)" if m.fell_back else "")
            for m in (modes["hybrid"], modes["text"], modes["vector"])
        ]
        print(
            f"| {corpus} | {provider} | {variant} | {first.chunks:,} | {first.texts:,} | {first.tokens:,} | "
            + " | ".join(cells)
            + " |"
        )


def print_weights(rows: list[Row]) -> None:
    weighted = [row for row in rows if row.weight is not None]
    if not weighted:
        return
    weights = sorted({row.weight for row in weighted if row.weight is not None})
    print("\nHybrid MRR per vector weight\n")
    print("| corpus | provider | variant | " + " | ".join(f"w={w:g}" for w in weights) + " |")
    print("|---|---|---|" + "---|" * len(weights))
    keyed: dict[tuple[str, str, str], dict[float, Row]] = {}
    for row in weighted:
        assert row.weight is not None
        keyed.setdefault((row.corpus, row.provider, row.variant), {})[row.weight] = row
    for (corpus, provider, variant), by_weight in keyed.items():
        cells = [f"{by_weight[w].mrr:.3f}" for w in weights]
        print(f"| {corpus} | {provider} | {variant} | " + " | ".join(cells) + " |")


def cross_validate(rows: list[Row]) -> None:
    """Leave one corpus out: the weight with the best mean MRR on the others, scored on the one left out."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if row.mode == "hybrid":
            groups.setdefault((row.provider, row.variant), []).append(row)
    print("\nLeave-one-corpus-out choice of the hybrid vector weight (by MRR)\n")
    print("| provider | variant | held out | chosen w | held-out @1 / @5 / MRR | default @1 / @5 / MRR |")
    print("|---|---|---|---|---|---|")
    for (provider, variant), group in groups.items():
        table = {(r.corpus, r.weight): r for r in group}
        names = sorted({r.corpus for r in group})
        weights = sorted({r.weight for r in group if r.weight is not None})
        if len(names) < 2 or not weights:
            continue
        for held in names:
            others = [n for n in names if n != held]
            chosen = max(weights, key=lambda w: sum(table[(n, w)].mrr for n in others) / len(others))
            picked, default = table[(held, chosen)], table[(held, None)]
            print(
                f"| {provider} | {variant} | {held} | {chosen:g} | {picked.at_1:.2f} / {picked.at_5:.2f} / "
                f"{picked.mrr:.3f} | {default.at_1:.2f} / {default.at_5:.2f} / {default.mrr:.3f} |"
            )
        overall = max(weights, key=lambda w: sum(table[(n, w)].mrr for n in names))
        print(f"| {provider} | {variant} | (all) | {overall:g} | | |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", action="append", help="Only this corpus (repeatable).")
    parser.add_argument("--corpus-dir", type=Path, help="Another folder to measure (with --queries).")
    parser.add_argument("--queries", type=Path, help="The labelled questions of --corpus-dir.")
    parser.add_argument("--provider", action="append", choices=["local", "emulator"])
    parser.add_argument("--variant", action="append", help='"name:key=value,..." settings of a variant.')
    parser.add_argument("--vector-weights", help="Also hybrid at each of these weights, e.g. 0.25,0.5,1.")
    parser.add_argument("--cross-validate", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    chosen = corpora()
    if args.corpus:
        chosen = {name: chosen[name] for name in args.corpus}
    if args.corpus_dir:
        chosen = {args.corpus_dir.name: (args.corpus_dir, args.queries)}
    variants = [parse_variant(v) for v in args.variant or ["default:"]]
    weights: list[float | None] = [None]
    if args.vector_weights:
        weights += [float(w) for w in args.vector_weights.split(",")]
    rows: list[Row] = []
    for provider in args.provider or ["local"]:
        for variant, overrides in variants:
            for name, (folder, queries) in chosen.items():
                started = time.perf_counter()
                rows += measure(name, folder, queries, provider, variant, overrides, weights)
                print(
                    f"{name} / {provider} / {variant}: {time.perf_counter() - started:.1f} s", file=sys.stderr
                )
    if args.json:
        print(json.dumps([row.__dict__ for row in rows], indent=2))
        return
    print_tables(rows)
    print_weights(rows)
    if args.cross_validate:
        cross_validate(rows)


if __name__ == "__main__":
    main()
