"""Retrieval quality per labelled corpus: a fresh knowledge base per corpus (local model, offline), ingested,
embedded by the worker, then scored as `kb eval` scores it; a Markdown table ready for docs/search.md.

    .venv/bin/python scripts/bench_quality.py                          # every corpus found
    .venv/bin/python scripts/bench_quality.py --corpus handbook --vector-weights 0.25,0.5,1
    .venv/bin/python scripts/bench_quality.py --corpus-dir DOCS --queries DOCS-queries.json

Corpora: `handbook` (tests/data), and scripts/corpora/NAME/ for each scripts/corpora/NAME-queries.json.
Not done yet: --provider emulator, --against and --cross-validate (see the i22-eval report).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.app import KnowledgeBase  # noqa: E402
from kb.records import SearchMode  # noqa: E402
from kb.search import evaluation  # noqa: E402
from kb.settings import KbSettings  # noqa: E402


def corpora() -> dict[str, tuple[Path, Path]]:
    found = {"handbook": (ROOT / "tests/data/handbook", ROOT / "tests/data/handbook-queries.json")}
    for queries in sorted((ROOT / "scripts/corpora").glob("*-queries.json")):
        folder = queries.with_name(queries.name.removesuffix("-queries.json"))
        if folder.is_dir():
            found[folder.name] = (folder, queries)
    return found


def measure(folder: Path, queries_file: Path, weights: list[float | None]) -> list[dict[str, object]]:
    queries = evaluation.load_queries(queries_file)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as work:
        settings = KbSettings(db=Path(work) / "kb.sqlite", provider="local", worker_idle_s=0.01)
        with KnowledgeBase(settings=settings) as kb:
            kb.ingest([folder])
            kb.worker().run(once=True, timeout_s=600)
        for weight in weights:
            weighted = settings.model_copy(update={"hybrid_vector_weight": weight})
            with KnowledgeBase(settings=weighted) as kb:
                modes = [SearchMode.HYBRID] if weight is not None else list(SearchMode)
                for mode in modes:
                    score = evaluation.score(kb, queries, mode)
                    rows.append(
                        {
                            "mode": mode.value if weight is None else f"hybrid w={weight:g}",
                            "@1": score.recall_at(1),
                            "@5": score.recall_at(5),
                            "@10": score.recall_at(10),
                            "MRR": score.mrr,
                            "nDCG@10": score.ndcg,
                            "fell back": score.fell_back,
                        }
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", action="append", help="Only this corpus (repeatable).")
    parser.add_argument("--corpus-dir", type=Path, help="Another folder to measure (with --queries).")
    parser.add_argument("--queries", type=Path, help="The labelled questions of --corpus-dir.")
    parser.add_argument("--vector-weights", help="Also hybrid at each of these weights, e.g. 0.25,0.5,1.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    chosen = corpora()
    if args.corpus:
        chosen = {name: chosen[name] for name in args.corpus}
    if args.corpus_dir:
        chosen = {args.corpus_dir.name: (args.corpus_dir, args.queries)}
    weights: list[float | None] = [None]
    if args.vector_weights:
        weights += [float(w) for w in args.vector_weights.split(",")]
    report = {}
    for name, (folder, queries) in chosen.items():
        started = time.perf_counter()
        rows = measure(folder, queries, weights)
        report[name] = {"rows": rows, "seconds": round(time.perf_counter() - started, 1)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, found in report.items():
        print(f"\n{name} (local, {found['seconds']} s)\n")
        print("| mode | @1 | @5 | @10 | MRR | nDCG@10 | fell back |\n|---|---|---|---|---|---|---|")
        for row in found["rows"]:  # type: ignore[attr-defined]
            print(
                f"| {row['mode']} | {row['@1']:.2f} | {row['@5']:.2f} | {row['@10']:.2f} "
                f"| {row['MRR']:.3f} | {row['nDCG@10']:.3f} | {row['fell back']} |"
            )


if __name__ == "__main__":
    main()
