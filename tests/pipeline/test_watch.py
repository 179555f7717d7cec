"""`kb watch`: real file events in a temporary folder, ingested burst by burst (the local provider, offline).

The watch runs on a thread (or as a `kb` child process); the tests wait for what it reports with a generous
deadline, and assert what the knowledge base holds, never how long it took.
"""

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kb.app import KnowledgeBase
from kb.core.watching import Burst
from kb.records import IngestReport
from kb.settings import KbSettings
from tests.support.crash_harness import KbProcess, start_kb, wait_until
from tests.support.files import write

DEADLINE_S = 60.0


class Watching:
    """`KnowledgeBase.watch` on a thread, recording each burst it reports."""

    def __init__(self, kb: KnowledgeBase, root: Path, **options: object) -> None:
        self.heard: list[tuple[Burst, IngestReport | None]] = []
        self.stop = threading.Event()
        self.ingests: int | None = None
        self.error: BaseException | None = None
        self._kb, self._root, self._options = kb, root, options
        self._thread = threading.Thread(target=self._run, name="test-watch")

    def _run(self) -> None:
        try:
            self.ingests = self._kb.watch(
                [self._root],
                stop=self.stop,
                on_burst=lambda *burst: self.heard.append(burst),
                **self._options,
            )
        except BaseException as error:  # seen by the test, not lost in the thread
            self.error = error

    def _hear(self, burst: Burst, report: IngestReport | None) -> None:
        self.heard.append((burst, report))

    def start(self) -> "Watching":
        self._thread.start()
        self.wait_for(1)  # the catch-up of the folder (it holds a document): the watch is armed
        return self

    def close(self) -> None:
        self.stop.set()
        self._thread.join(DEADLINE_S)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error

    def wait_for(self, count: int) -> list[IngestReport]:
        """The reports of the first `count` bursts, once that many were heard."""
        reached = wait_until(lambda: len(self.heard) >= count or self.error is not None, DEADLINE_S, 0.02)
        assert self.error is None, self.error
        assert reached, f"heard {len(self.heard)} bursts, expected {count}: {self.heard}"
        return [report for _, report in self.heard[:count] if report is not None]

    def last(self) -> IngestReport:
        report = self.heard[-1][1]
        assert report is not None
        return report


def watch_settings(db: Path, **overrides: object) -> KbSettings:
    # Quiet long enough that a loaded machine never splits a burst; polls short so that tests are quick.
    values: dict[str, object] = {
        "watch_debounce_ms": 400,
        "watch_max_burst_ms": 30_000,
        "watch_poll_s": 0.2,
    }
    return KbSettings(db=db, provider="local", **{**values, **overrides})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    write(folder / "seed.md", "# Seed\n\nThe seed document is here from the start.\n")
    return folder


@pytest.fixture
def watch_kb(db_path: Path) -> Iterator[KnowledgeBase]:
    with KnowledgeBase(settings=watch_settings(db_path)) as kb:
        yield kb


def _paths(kb: KnowledgeBase) -> set[str]:
    from kb.store import documents

    with kb.engine.connect() as connection:
        return {Path(path).name for path in documents.stored_documents(connection)}


def found_by_text(kb: KnowledgeBase, words: str) -> set[str]:
    return {Path(hit.path).name for hit in kb.search(words, mode="text", k=5).hits}


@pytest.mark.slow
def test_creates_edits_renames_and_deletes_are_ingested_and_deletes_kept_without_prune(
    watch_kb: KnowledgeBase, root: Path
) -> None:
    watching = Watching(watch_kb, root).start()
    try:
        assert watching.last().added == [str(root / "seed.md")]

        write(root / "notes.md", "# Notes\n\nAubergines grow in the greenhouse.\n")
        assert watching.wait_for(2)[-1].added == [str(root / "notes.md")]
        assert found_by_text(watch_kb, "aubergines") == {"notes.md"}  # searchable at once, by text

        write(root / "notes.md", "# Notes\n\nCourgettes replaced the aubergines.\n")
        assert watching.wait_for(3)[-1].changed == [str(root / "notes.md")]
        assert found_by_text(watch_kb, "courgettes") == {"notes.md"}

        (root / "notes.md").rename(root / "garden.md")
        renamed = watching.wait_for(4)[-1]
        assert renamed.added == [str(root / "garden.md")]
        assert renamed.missing == [str(root / "notes.md")]  # kept: no --prune
        assert renamed.tasks_queued == 0  # the same text under another name costs nothing

        (root / "garden.md").unlink()
        assert watching.wait_for(5)[-1].missing == [str(root / "garden.md")]  # only what changed
    finally:
        watching.close()
    assert _paths(watch_kb) == {"seed.md", "notes.md", "garden.md"}
    assert watching.ingests == 5


@pytest.mark.slow
def test_with_prune_deleted_and_renamed_away_files_are_forgotten(watch_kb: KnowledgeBase, root: Path) -> None:
    write(root / "sub" / "a.md", "# A\n\nAnemones by the pond.\n")
    write(root / "sub" / "b.md", "# B\n\nBegonias in the shade.\n")
    watching = Watching(watch_kb, root, prune=True).start()
    try:
        (root / "sub" / "a.md").rename(root / "moved.md")
        renamed = watching.wait_for(2)[-1]
        assert (renamed.added, renamed.removed) == ([str(root / "moved.md")], [str(root / "sub" / "a.md")])

        shutil.rmtree(root / "sub")  # one event for the folder: what was stored below it is forgotten
        assert watching.wait_for(3)[-1].removed == [str(root / "sub" / "b.md")]
    finally:
        watching.close()
    assert _paths(watch_kb) == {"seed.md", "moved.md"}
    assert found_by_text(watch_kb, "begonias") == set()


def test_an_atomic_save_is_one_update(watch_kb: KnowledgeBase, root: Path) -> None:
    watching = Watching(watch_kb, root).start()
    try:
        # As editors save: the new text in a temporary file beside it, then renamed over the document.
        temporary = root / ".seed.md.swp"
        temporary.write_text("# Seed\n\nRewritten with rhubarb.\n", encoding="utf-8")
        os.replace(temporary, root / "seed.md")
        saved = watching.wait_for(2)[-1]
    finally:
        watching.close()
    assert (saved.added, saved.changed, saved.removed) == ([], [str(root / "seed.md")], [])
    assert watching.ingests == 2
    assert found_by_text(watch_kb, "rhubarb") == {"seed.md"}


@pytest.mark.slow
def test_ignored_files_are_not_ingested_and_an_ignore_file_change_rereads_its_folder(
    watch_kb: KnowledgeBase, root: Path
) -> None:
    write(root / ".kbignore", "drafts/\n")
    watching = Watching(watch_kb, root).start()
    try:
        write(root / "drafts" / "wip.md", "# WIP\n\nNot for the knowledge base.\n")
        write(root / ".hidden" / "secret.md", "# Hidden\n\nNever read.\n")
        write(root / "photo.png", "not a document")
        write(root / "kept.md", "# Kept\n\nThis one counts.\n")
        assert watching.wait_for(2)[-1].added == [str(root / "kept.md")]

        (root / ".kbignore").write_text("", encoding="utf-8")  # drafts are wanted now
        assert watching.wait_for(3)[-1].added == [str(root / "drafts" / "wip.md")]
    finally:
        watching.close()
    assert _paths(watch_kb) == {"seed.md", "kept.md", "wip.md"}


@pytest.mark.slow
def test_the_database_inside_the_watched_folder_causes_no_burst(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "seed.md", "# Seed\n\nThe seed document.\n")
    with KnowledgeBase(settings=watch_settings(root / "kb.sqlite", text_index="tantivy")) as kb:
        watching = Watching(kb, root).start()
        try:
            write(root / "next.md", "# Next\n\nWritten after the start.\n")
            watching.wait_for(2)
            heard = len(watching.heard)
            # Ingests write the database and the text index beside it: were those heard, bursts would follow.
            assert not wait_until(lambda: len(watching.heard) > heard, 2.0, 0.05)
        finally:
            watching.close()
    assert watching.ingests == 2


@pytest.mark.slow
def test_a_burst_of_a_thousand_files_is_one_ingest(db_path: Path, root: Path) -> None:
    with KnowledgeBase(settings=watch_settings(db_path, watch_debounce_ms=1_000)) as kb:
        watching = Watching(kb, root).start()
        try:
            checkout = root / "checkout"  # as `git checkout` writes a tree: folders and files at once
            for number in range(1_000):
                write(
                    checkout / f"part{number % 10}" / f"page{number}.md",
                    f"# Page {number}\n\nText {number}.\n",
                )
            burst = watching.wait_for(2)[-1]
            assert len(burst.added) == 1_000
            assert not wait_until(lambda: len(watching.heard) > 2, 2.0, 0.05)  # nothing more comes
        finally:
            watching.close()
        assert watching.ingests == 2  # the catch-up, and the burst
        assert len(_paths(kb)) == 1_001


@pytest.mark.slow
def test_a_folder_that_disappears_is_kept_and_watched_again_when_it_returns(
    db_path: Path, root: Path
) -> None:
    with KnowledgeBase(settings=watch_settings(db_path)) as kb:
        watching = Watching(kb, root, prune=True).start()
        try:
            shutil.rmtree(root)
            assert wait_until(lambda: any(burst.vanished for burst, _ in watching.heard), DEADLINE_S, 0.02)
            assert _paths(kb) == {"seed.md"}  # a vanished folder forgets nothing, even with --prune

            write(root / "back.md", "# Back\n\nThe folder came back with marigolds.\n")
            assert wait_until(lambda: "back.md" in _paths(kb), DEADLINE_S, 0.02)
            returned = [burst for burst, _ in watching.heard if burst.returned]
            assert [burst.returned for burst in returned] == [(root,)]

            write(root / "later.md", "# Later\n\nWatched as before.\n")  # events flow again
            assert wait_until(lambda: "later.md" in _paths(kb), DEADLINE_S, 0.02)
        finally:
            watching.close()
        assert _paths(kb) == {"back.md", "later.md"}  # seed.md did not come back: pruned
        assert found_by_text(kb, "marigolds") == {"back.md"}


def _start_watch(tmp_path: Path, args: list[str]) -> KbProcess:
    env = {name: value for name, value in os.environ.items() if not name.startswith("KB_")}
    env.update(
        {
            "KB_DB": str(tmp_path / "kb.sqlite"),
            "KB_PROVIDER": "local",
            "KB_WATCH_DEBOUNCE_MS": "300",
            "KB_WATCH_POLL_S": "0.2",
            "KB_WORKER_IDLE_S": "0.05",
            "KB_POLL_INITIAL_S": "0.05",
            "KB_POLL_MAX_S": "0.2",
            "KB_BATCH_MIN_TEXTS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return start_kb(args, env, tmp_path / "logs", args[0])


@pytest.mark.slow
def test_kb_watch_prints_a_line_per_burst_and_sigterm_stops_it_cleanly(tmp_path: Path, root: Path) -> None:
    process = _start_watch(tmp_path, ["watch", str(root)])
    try:
        assert wait_until(lambda: "watching 1 folder: 1 added" in process.stdout, DEADLINE_S, 0.05)
        write(root / "new.md", "# New\n\nA document written while watched.\n")
        assert wait_until(lambda: "1 change: 1 added" in process.stdout, DEADLINE_S, 0.05), process.stderr
    finally:
        process.terminate()
        code = process.wait(DEADLINE_S)
    assert code == 0, process.stderr
    assert "stopped watching (2 ingests)" in process.stderr
    assert "Traceback" not in process.stderr


@pytest.mark.slow
def test_kb_worker_watch_ingests_and_embeds_in_one_process(tmp_path: Path, root: Path) -> None:
    process = _start_watch(tmp_path, ["worker", "--watch", str(root)])
    try:
        assert wait_until(lambda: "watching 1 folder: 1 added" in process.stdout, DEADLINE_S, 0.05)
        write(root / "new.md", "# New\n\nTulips and daffodils in spring.\n")
        with KnowledgeBase(settings=KbSettings(db=tmp_path / "kb.sqlite", provider="local")) as kb:

            def embedded() -> bool:
                done, everything = kb.embedding_progress()
                return everything >= 2 and done == everything

            assert wait_until(lambda: "1 change: 1 added" in process.stdout and embedded(), DEADLINE_S, 0.1)
            hits = kb.search("tulips daffodils", mode="vector", k=1).hits
            assert [Path(hit.path).name for hit in hits] == ["new.md"]
    finally:
        process.terminate()
        code = process.wait(DEADLINE_S)
    assert code == 0, process.stderr
    assert "worker stopped" in process.stdout
    assert "Traceback" not in process.stderr
