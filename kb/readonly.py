"""Commands that only read, on a SQLite knowledge base, without SQLAlchemy: `kb status` and `kb search`.

They open the file read-only with the bare SQLite driver (`kb.store.dbapi`) and run the same read model as
`KnowledgeBase` (`kb.store.readmodel`, `kb.search`, `kb.report.status`): a cold command then starts in a
fraction of the time, and a knowledge base on read-only media can be searched. When this path cannot serve a
command as it is (PostgreSQL, a database to create or migrate, a question that must be paid for and
remembered), its functions return None and the caller opens `KnowledgeBase`, which can.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kb.records import SearchMode, SearchResult, StatusReport
from kb.settings import KbSettings
from kb.store import dbapi, migrate, readmodel
from kb.store.reader import DriverReader

if TYPE_CHECKING:
    from kb.core.metadata import WhereSpec


@contextmanager
def _reader(settings: KbSettings) -> Iterator[DriverReader]:
    reader = DriverReader(dbapi.connect_readonly(settings.db, settings.busy_timeout_ms), str(settings.db))
    try:
        yield reader
    finally:
        reader.close()


def usable(settings: KbSettings) -> bool:
    """A SQLite file that exists, at this kb's schema."""
    if settings.database_url or not settings.db.is_file():
        return False
    with _reader(settings) as reader:
        return migrate.check_revision(readmodel.revision(reader)) == migrate.HEAD


def status(settings: KbSettings) -> StatusReport | None:
    if not usable(settings):
        return None
    from kb.report.status import StatusOptions, collect  # here: `kb search` has no use for it

    with _reader(settings) as reader:
        return collect(reader, settings.db, StatusOptions.from_settings(settings))


def active_model(settings: KbSettings) -> str | None:
    with _reader(settings) as reader:
        active = readmodel.active_space(reader)
    return None if active is None else active.model


def writable(settings: KbSettings) -> bool:
    """Whether kb may write to the SQLite file (and its folder, for the journal): False on read-only media."""
    db = settings.db
    return os.access(db, os.W_OK) and os.access(db.absolute().parent, os.W_OK)


def search(
    settings: KbSettings,
    query: str,
    *,
    k: int,
    mode: SearchMode,
    path: str | None,
    space: int | None,
    pay_unrecorded: bool | None = None,
    per_document: int | None = None,
    where: "WhereSpec | None" = None,
) -> SearchResult | None:
    """The search, if it needs nothing written: spaces of the local model (whose questions are free), or
    a question already paid for and cached. None otherwise, unless `pay_unrecorded` (default: the database
    is on read-only media, so `KnowledgeBase` could not record it either): then a new question is embedded
    and paid for without being cached or counted."""
    if not usable(settings):
        return None
    from kb.core.questions import check_question
    from kb.search import plan

    check_question(query)  # before the question is looked up in the cache
    with _reader(settings) as reader:
        found = plan.candidates(reader, space)
        unpaid = plan.must_pay(reader, found, query, mode)
        if unpaid and not (pay_unrecorded if pay_unrecorded is not None else not writable(settings)):
            return None  # a paid question: the full path pays for it once and remembers it
        searched = plan.plan(reader, found, settings)
    cap = settings.hits_per_document if per_document is None else per_document
    result = searched.run(
        lambda: _reader(settings), query, k=k, mode=mode, path=path, per_document=cap, where=where
    )
    if unpaid and result.vector_index is not None:
        result.notes.append("the database is read-only: this question's vector and cost were not recorded")
    return result
