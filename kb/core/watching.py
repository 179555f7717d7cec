"""Watch folders for changes (`kb watch`): native file events, grouped into bursts.

watchfiles (Rust `notify`: inotify, FSEvents, ReadDirectoryChangesW) delivers the events and debounces them:
a burst ends once the files have been quiet for `quiet_ms`, so an editor's atomic save (write a temporary
file, rename it over the document) or a `git checkout` of a thousand files is one burst. Events that cannot
concern a document are dropped by name (`sources.may_be_discovered`); the walk that ingests a burst decides
the rest (ignore files, include/exclude), as `kb ingest` does.

Each time the folders are (re)armed, the first burst also covers them whole: what changed while nothing
watched is caught up (unchanged files cost a stat). A watched folder that disappears is reported once and
watched again when it comes back; its documents are kept.
"""

import errno
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import watchfiles

from kb.core import sources
from kb.errors import InputError


@dataclass(frozen=True, slots=True)
class WatchOptions:
    quiet_ms: int = 300  # a burst ends after this long without events
    max_burst_ms: int = 5_000  # a longer one is delivered in parts
    poll_s: float = 1.0  # how often vanished folders are looked for


@dataclass(frozen=True, slots=True)
class Burst:
    """What changed since the last burst. `focus` is what to ingest again: the files and folders that
    changed (the folder of a changed ignore file), or whole folders that were just armed."""

    roots: tuple[Path, ...]  # the watched folders that exist
    focus: frozenset[str]
    events: int  # file events in the burst (after dropping those that cannot concern a document)
    vanished: tuple[Path, ...] = ()  # folders gone since the last burst
    returned: tuple[Path, ...] = ()  # folders back since the last burst
    catching_up: bool = False  # the first burst of an arm: `focus` holds whole folders

    @property
    def empty(self) -> bool:
        return not (self.focus or self.vanished or self.returned)


def folders(paths: Sequence[Path]) -> tuple[Path, ...]:
    """The folders to watch, absolute; anything else is an InputError."""
    roots: list[Path] = []
    for path in paths:
        absolute = Path(os.path.abspath(path))
        if not absolute.is_dir():
            what = "not found" if not absolute.exists() else "not a folder (watch its folder, with --include)"
            raise InputError(f"cannot watch {path}: {what}")
        if absolute not in roots:
            roots.append(absolute)
    return tuple(roots)


class _ChangeFilter:
    """Keeps the events a walk of the roots could care about; never those of kb's own files."""

    def __init__(self, roots: Sequence[Path], own: Sequence[Path]) -> None:
        # Deepest first: an event belongs to the innermost watched folder that holds it. Some systems
        # (macOS) report paths with symlinks resolved: those map back to the folder as given.
        given = [(str(root), str(root)) for root in roots]
        resolved = [(os.path.realpath(root), str(root)) for root in roots]
        self._roots = sorted({*given, *resolved}, key=lambda pair: len(pair[0]), reverse=True)
        self._own = [str(path) for path in own] + [os.path.realpath(path) for path in own]

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if any(path == own or path.startswith(own + os.sep) for own in self._own):
            return False
        shown = self.shown(path)
        if shown is None:
            return False
        parts = Path(shown[1]).parts
        is_dir = None if change == watchfiles.Change.deleted else os.path.isdir(path)
        return sources.may_be_discovered(parts, is_dir=is_dir)

    def shown(self, path: str) -> tuple[str, str] | None:
        """The watched folder (as given) that holds `path`, and the path relative to it."""
        for reported, given in self._roots:
            if path == reported:
                return given, ""
            if path.startswith(reported + os.sep):
                return given, path[len(reported) + 1 :]
        return None

    def as_given(self, path: str) -> str:
        shown = self.shown(path)
        if shown is None:
            return path
        root, relative = shown
        return os.path.join(root, relative) if relative else root


def bursts(
    paths: Sequence[Path],
    stop: threading.Event,
    options: WatchOptions = WatchOptions(),
    own_files: Sequence[Path] = (),
) -> Iterator[Burst]:
    """Bursts of changes below the folders `paths` until `stop` is set. An empty burst comes every
    `options.poll_s` while nothing changes (a caller can retry work then)."""
    roots = folders(paths)
    keep = _ChangeFilter(roots, [Path(os.path.abspath(p)) for p in own_files])
    before = roots
    while not stop.is_set():
        armed = _present(roots)
        catch_up = frozenset(map(str, armed))
        found = _events(armed, keep, stop, options) if armed else _waited(stop, options)
        for focus, events in found:
            now = _present(roots)
            gone = tuple(root for root in before if root not in now)
            back = tuple(root for root in now if root not in before)
            wanted = _below(now, focus | catch_up)
            yield Burst(now, wanted, events, gone, back, catching_up=bool(catch_up))
            before, catch_up = now, frozenset()
            if now != armed:
                break  # a folder went, or came back: watch again


def _present(roots: tuple[Path, ...]) -> tuple[Path, ...]:
    return tuple(root for root in roots if root.is_dir())


def _below(roots: tuple[Path, ...], paths: frozenset[str]) -> frozenset[str]:
    """Those of `paths` inside one of `roots`."""
    folders_ = [str(root) for root in roots]
    return frozenset(
        path for path in paths if any(path == f or path.startswith(f + os.sep) for f in folders_)
    )


def _waited(stop: threading.Event, options: WatchOptions) -> Iterator[tuple[frozenset[str], int]]:
    """No folder to watch: one empty burst after a poll interval."""
    stop.wait(options.poll_s)
    yield frozenset(), 0


def _events(
    armed: tuple[Path, ...], keep: _ChangeFilter, stop: threading.Event, options: WatchOptions
) -> Iterator[tuple[frozenset[str], int]]:
    """(focus, number of events) per burst of one native watch of `armed`, and an empty one per poll
    interval; ends when `stop` is set, or at once if a folder vanished before the watch was set up."""
    try:
        changes = watchfiles.watch(
            *armed,
            watch_filter=keep,
            debounce=options.max_burst_ms,
            step=options.quiet_ms,
            stop_event=stop,
            rust_timeout=max(1, round(options.poll_s * 1000)),
            yield_on_timeout=True,
            ignore_permission_denied=True,  # an unreadable folder is reported by the walk, as by ingest
        )
        for found in changes:
            yield _focus(keep.as_given(path) for _, path in found), len(found)
    except FileNotFoundError:  # a folder vanished meanwhile: the caller arms again
        stop.wait(options.poll_s)
    except OSError as error:
        if error.errno == errno.ENOSPC or "limit" in str(error).lower():
            raise InputError(
                "the system's limit on watched folders is reached (on Linux: sysctl "
                "fs.inotify.max_user_watches); raise it, or watch fewer folders"
            ) from None
        raise


def _focus(paths: Iterable[str]) -> frozenset[str]:
    """The paths to ingest again: each changed path, or the folder of a changed ignore file."""
    return frozenset(os.path.dirname(path) if sources.is_ignore_file(path) else path for path in paths)
