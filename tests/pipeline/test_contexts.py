"""Chunk contexts (contextual retrieval) through the batch ledger: written once per chunk of a document by a
generation model at batch price, kept, embedded after the chunk in a new space, and never paid twice."""

from pathlib import Path

import pytest
from sqlalchemy import text

from kb.app import KnowledgeBase
from kb.errors import ConfigError
from kb.settings import KbSettings
from kb.testing.gemini_emulator import GeminiEmulator
from tests.support.files import HANDBOOK
from tests.support.settings import FAST_SETTINGS

TUTORIAL = HANDBOOK / "tutorial"


@pytest.fixture
def headed(gemini_settings: KbSettings, emulator: GeminiEmulator) -> KbSettings:
    """The tutorial ingested and embedded (headed chunks), with the emulator's log and bill cleared."""
    settings = gemini_settings.model_copy(update=FAST_SETTINGS)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([TUTORIAL])
        kb.worker().run(once=True, timeout_s=60)
    emulator.reset_log()
    emulator.reset_billing()
    return settings


def _rows(kb: KnowledgeBase, sql: str) -> list[tuple[object, ...]]:
    with kb.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def _generation_requests(emulator: GeminiEmulator) -> int:
    return sum(len(r.texts) for r in emulator.log if r.route in ("generateContent", "batchGenerateContent"))


def test_contexts_are_written_once_embedded_after_the_chunk_and_searched(
    headed: KbSettings, emulator: GeminiEmulator
) -> None:
    with KnowledgeBase(settings=headed) as kb:
        plan = kb.enrich_estimate()
        distinct = _rows(kb, "SELECT count(DISTINCT context_key) FROM chunks")[0][0]
        assert plan.to_write == distinct and plan.already_written == 0 and plan.usd_batch
        space_id, queued = kb.enrich_start()
        assert queued == distinct
        result = kb.worker().run(once=True, timeout_s=60)
        assert not result.errors, result.errors
        written = _rows(kb, f"SELECT count(*) FROM chunk_contexts WHERE space_id = {space_id}")[0][0]
        assert written == distinct
        assert _generation_requests(emulator) == distinct  # one request per context, none twice
        situations = _rows(kb, "SELECT DISTINCT d.title, c.situation FROM chunks c JOIN documents d ON d.id = c.document_id")
        assert all(str(s).startswith(f"Context: {t}") for t, s in situations)  # the emulator's model
        bill = _rows(kb, f"SELECT sum(tokens), sum(output_tokens), sum(usd) FROM usage_records WHERE space_id = {space_id}")[0]
        assert bill[0] and bill[1] and bill[2]

        reindex = kb.reindex_spec(contexts=True)
        assert kb.reindex_estimate(reindex).texts == distinct
        new_space = kb.reindex_start(reindex)
        kb.worker().run(once=True, timeout_s=60)
        assert kb.status().spaces[-1].id == new_space
        states = {s.id: s.state for s in kb.status().spaces}
        assert states[new_space] == "active" and states[space_id] == "contexts"
        embedded_texts = [t for r in emulator.log if r.route == "asyncBatchEmbedContent" for t in r.texts]
        assert embedded_texts and all(t.startswith("Context: ") for t in embedded_texts)
        hits = kb.search("How do I enable CORS?", k=3).hits
        assert hits and hits[0].path.endswith("cors.md")

        # An unchanged re-ingest costs no generation; an edited document asks again for its chunks only.
        emulator.reset_log()
        kb.ingest([TUTORIAL])
        kb.worker().run(once=True, timeout_s=60)
        assert _generation_requests(emulator) == 0


def test_an_edited_document_asks_again_for_its_own_chunks_only(
    gemini_settings: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Otters\n\n## Food\n\nOtters eat urchins.\n\n## Homes\n\nOtters rest in kelp.\n")
    (docs / "b.md").write_text("# Walruses\n\n## Ice\n\nWalruses haul out on the ice.\n")
    settings = gemini_settings.model_copy(update={**FAST_SETTINGS, "chunk_target_tokens": 8})
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([docs])
        kb.enrich_start()
        kb.worker().run(once=True, timeout_s=60)
        first = _generation_requests(emulator)
        chunks_of_a = _rows(kb, "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id WHERE d.source_path LIKE '%a.md'")[0][0]
        emulator.reset_log()
        (docs / "a.md").write_text("# Otters\n\n## Food\n\nOtters eat urchins and crabs.\n\n## Homes\n\nOtters rest in kelp.\n")
        kb.ingest([docs])
        kb.worker().run(once=True, timeout_s=60)
        assert _generation_requests(emulator) == chunks_of_a < first


def test_without_a_gemini_key_contexts_are_refused_with_the_reason(db_path: Path) -> None:
    with KnowledgeBase(settings=KbSettings(db=db_path, provider="local")) as kb:
        kb.ingest([TUTORIAL])
        with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
            kb.enrich_start()
