"""Search building blocks: FTS query building, rank fusion, path globs, request planning."""

import fnmatch
import json
from pathlib import Path

import numpy as np
import pytest

from kb.app import KnowledgeBase
from kb.providers.gemini import MAX_REQUEST_BYTES, MAX_TEXTS_PER_REQUEST, plan_requests
from kb.records import SearchMode
from kb.search.hybrid import SearchSpace, normalize_glob, rank_fusion, run_search
from kb.search.vectorindex import SpaceIndex
from kb.store import fulltext, vectors
from kb.store.engine import write_transaction
from kb.store.fulltext import match_expression
from tests.support.files import HANDBOOK


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("How do I enable CORS?", '"enable" OR "cors"'),
        ('a "quoted" NEAR(x) * -', '"quoted" OR "near" OR "x"'),
        ("the of and", '"the" OR "of" OR "and"'),  # only stopwords: keep them rather than match nothing
        ("  ", None),
        ("日本語 テキスト", '"日本語" OR "テキスト"'),
    ],
)
def test_match_expression_is_safe_and_meaningful(query: str, expected: str | None) -> None:
    assert match_expression(query) == expected


def test_rank_fusion_rewards_agreement() -> None:
    fused = rank_fusion([[1, 2, 3], [3, 4, 1]], k=60)
    assert [item for item, _ in fused][:2] == [1, 3]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)
    weighted = rank_fusion([[1, 2], [2, 1]], k=10, weights=[1.0, 0.5])
    assert [item for item, _ in weighted] == [1, 2]
    assert weighted[0][1] == pytest.approx(1 / 11 + 0.5 / 12)


def test_globs_match_anywhere_unless_anchored() -> None:
    assert normalize_glob("tutorial/*") == "*/tutorial/*"
    assert normalize_glob("/abs/*.md") == "/abs/*.md"
    assert normalize_glob(None) is None


def test_request_plan_respects_item_and_byte_limits() -> None:
    texts = ["short"] * 250 + ["x" * 900_000] * 5
    plan = plan_requests(texts)
    assert [len(r) for r in plan] == [100, 100, 53, 2]  # 3 big texts still fit beside 50 small
    assert sum(len(r) for r in plan) == len(texts)
    assert [i for r in plan for i in r] == list(range(len(texts)))
    for request in plan:
        assert len(request) <= MAX_TEXTS_PER_REQUEST
        assert sum(len(json.dumps(texts[i])) for i in request) <= MAX_REQUEST_BYTES


def test_text_search_finds_the_right_page(kb: KnowledgeBase) -> None:
    kb.ingest([HANDBOOK])
    result = kb.search("CORS middleware allow origins", mode="text", k=5)
    assert result.used == SearchMode.TEXT and not result.notes
    assert any(hit.path.endswith("tutorial/cors.md") for hit in result.hits)
    assert [hit.rank for hit in result.hits] == list(range(1, len(result.hits) + 1))
    only = kb.search("CORS middleware", mode="text", path="advanced/*")
    assert only.hits and all("/advanced/" in hit.path for hit in only.hits)


def test_hybrid_without_vectors_falls_back_to_text_and_says_so(kb: KnowledgeBase) -> None:
    kb.ingest([HANDBOOK])
    result = kb.search("CORS middleware", mode="hybrid")
    assert result.used == SearchMode.TEXT
    assert result.hits and "nothing is embedded yet" in result.notes[0]


def test_vector_search_and_the_quantized_index_agree(kb: KnowledgeBase, tmp_path: Path) -> None:
    """Vectors written straight to the space: the sqlite-vec scan and the quantized index rank alike."""
    kb.ingest([HANDBOOK / "tutorial"])
    with kb.engine.connect() as connection:
        task_ids = [row[0] for row in connection.exec_driver_sql("SELECT id FROM embedding_tasks")]
        space_id, dims = connection.exec_driver_sql("SELECT id, dimensions FROM embedding_spaces").one()
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((len(task_ids), dims)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    with write_transaction(kb.engine) as connection:
        vectors.write(connection, space_id, task_ids, matrix)
    target = 7
    query = matrix[target : target + 1]
    scan = SearchSpace(space_id, "test", lambda _: query)
    by_scan = run_search(kb.open_reader, "q1", k=5, mode=SearchMode.VECTOR, space=scan)
    assert by_scan.used == SearchMode.VECTOR
    for setting in ("quantized", "memory"):
        index = SpaceIndex(space_id, dims, setting)
        indexed = SearchSpace(space_id, "test", lambda _: query, index=index)
        by_index = run_search(kb.open_reader, f"q-{setting}", k=5, mode=SearchMode.VECTOR, space=indexed)
        assert index.last_method == setting
        assert [h.chunk_id for h in by_scan.hits] == [h.chunk_id for h in by_index.hits]
    assert by_scan.hits[0].score == pytest.approx(1.0, abs=1e-4)
    with kb.engine.connect() as connection:
        sha = connection.exec_driver_sql(
            "SELECT text_sha256 FROM embedding_tasks WHERE id = ?", (task_ids[target],)
        ).scalar()
    assert by_scan.hits[0].text and sha


def test_text_search_under_a_path_is_the_best_matches_there(kb: KnowledgeBase, tmp_path: Path) -> None:
    """`--path` ranks matches first and filters after, widening as needed: the hits are still exactly the
    best-ranked matches under the path, when the best matches overall are all elsewhere."""
    for folder, files, tide in (("elsewhere", 40, 4), ("wanted", 3, 1)):
        (tmp_path / folder).mkdir()
        for number in range(files):
            sections = [
                f"## Part {number}-{section}\n\n" + "tide " * tide + "filler " * (number * 10 + section)
                for section in range(10)
            ]
            (tmp_path / folder / f"f{number}.md").write_text("\n\n".join(sections), encoding="utf-8")
    kb.ingest([tmp_path / "elsewhere", tmp_path / "wanted"])
    with kb.open_reader() as reader:
        everything = fulltext.search(reader, "tide", 10_000)
        paths = dict(
            reader.rows("SELECT c.id, d.source_path FROM chunks c JOIN documents d ON d.id = c.document_id")
        )
        wanted = [hit for hit in everything if fnmatch.fnmatchcase(paths[hit[0]], "*/wanted/*")]
        assert len(wanted) > 20 and len(everything) > 300  # (chunking merges some of the short sections)
        for limit in (5, 10, 40):  # 40: more than the chunks there, so every match is ranked
            assert fulltext.search(reader, "tide", limit, "*/wanted/*") == wanted[:limit]
