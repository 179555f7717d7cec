"""Find documents on disk and load them as normalised text for the chunker.

`discover` walks the paths given to `kb ingest` and yields a `Candidate` per usable file, or a
`Skipped` for a file (or directory) the user should hear about. `load_document` reads one
candidate, `load_bytes` does the same for bytes from stdin. Nothing found on disk makes these
raise: problems become `Skipped` with a short reason. Only bad user input raises `InputError`.
`path_to_text` and `text_to_path` turn file paths into the text stored as a document's
`source_path` and back. File-system I/O only; format conversion lives in `kb.core.formats`.
"""

import codecs
import errno
import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pathspec import GitIgnoreSpec

from kb.core import globs
from kb.core.formats import (
    Converted,
    UnreadableDocument,
    declared_charset,
    html_document,
    markdown_document,
    rst_document,
)
from kb.core.pdf import pdf_document
from kb.core.word import docx_document
from kb.errors import InputError

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdx": "markdown",
    ".txt": "text",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}
SOURCE_FORMATS = ("markdown", "text", "rst", "html", "pdf", "docx")
# Formats read from bytes by a parser (an optional extra) rather than decoded as text.
_BINARY_CONVERTERS: dict[str, Callable[[bytes], Converted]] = {"pdf": pdf_document, "docx": docx_document}
# Suffixes people try that kb cannot read, with what to do instead.
_UNSUPPORTED_HINTS = {
    ".doc": "legacy Word format; save it as .docx",
    ".odt": "save it as .docx",
    ".rtf": "save it as .docx",
}
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

_IGNORE_FILE_NAMES = (".gitignore", ".kbignore")  # later files override earlier ones
_JUNK_DIR_NAMES = frozenset({"node_modules", "__pycache__"})  # hidden ones are skipped anyway
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_READ_CHUNK = 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_DIRECTORY_FLAGS = (
    os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
# A directory whose path is longer than PATH_MAX can still be listed through its parent's descriptor.
_CAN_WALK_BY_DESCRIPTOR = (
    os.scandir in os.supports_fd and os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file found by discovery, not yet read."""

    path: Path  # absolute but not resolved through symlinks: the document's identity
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Skipped:
    path: Path  # as given on the command line, or as found below it
    reason: str


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    path: Path
    text: str
    fmt: str  # what the chunker should treat the text as: "markdown" or "text"
    source_format: str  # what the file was: "markdown", "text", "rst", "html", "pdf" or "docx"
    title: str
    metadata: dict[str, object]
    content_sha256: str  # of the raw bytes, before any normalisation
    size: int
    mtime_ns: int
    page_starts: tuple[int, ...] = ()  # where page 1, 2, ... starts in `text`, for documents with pages


class _Unusable(Exception):
    """A file that cannot become a document; carries the reason shown to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Paths as stored text
# --------------------------------------------------------------------------------------------

_AMBIGUOUS_BACKSLASH = re.compile(r"\\(?=x(?:5c|[89a-f][0-9a-f]))")
_UNDECODED_BYTE = re.compile("[\udc80-\udcff]")
_ESCAPE = re.compile(r"\\x(5c|[89a-f][0-9a-f])")


def path_to_text(path: str | os.PathLike[str]) -> str:
    """The path as text any database can store, which `text_to_path` maps back to the exact bytes.

    File names are bytes and need not be UTF-8. Python turns each byte that is not part of valid
    UTF-8 into a lone surrogate (PEP 383), which UTF-8 text cannot hold; here it becomes `\\xHH`,
    two lowercase hex digits from 80 to ff, as Python shows it: `caf\\xe9.md`. To keep the mapping
    one-to-one, a literal backslash that would read as such an escape (followed by `x5c`, or by `x`
    and 80 to ff) is itself written `\\x5c`. Every other path is its own text: documents stored
    before this scheme keep their identity unless their path holds such a backslash.
    """
    raw = os.fsencode(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")
    if "\\" in text:
        text = _AMBIGUOUS_BACKSLASH.sub(r"\\x5c", text)
    return _UNDECODED_BYTE.sub(_escape_byte, text)


def text_to_path(text: str) -> str:
    """The file path that `path_to_text` turned into `text`."""
    if "\\x" not in text:
        return text
    with_surrogates = _ESCAPE.sub(_unescape_byte, text)
    return os.fsdecode(with_surrogates.encode("utf-8", "surrogateescape"))


def _escape_byte(surrogate: re.Match[str]) -> str:
    return f"\\x{ord(surrogate[0]) - 0xDC00:02x}"


def _unescape_byte(escape: re.Match[str]) -> str:
    return "\\" if escape[1] == "5c" else chr(0xDC00 + int(escape[1], 16))


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


def discover(
    paths: Sequence[Path],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    focus: "Focus | None" = None,
) -> Iterator[Candidate | Skipped]:
    """Yield each usable file below `paths` once, in a deterministic order.

    Raises InputError at call time (before anything is yielded) for a path that does not exist
    or an invalid include/exclude pattern. `include`/`exclude` use .gitignore syntax, match paths
    relative to the directory being walked, and do not apply to files named explicitly. With a
    `focus`, only the part of the walk it reaches is walked (`kb watch`): the same files, ignore
    files and patterns decide as in a whole walk.
    """
    discovery = _Discovery(
        include=_compile_patterns(include, "include"),
        exclude=_compile_patterns(exclude, "exclude"),
        focus=focus,
    )
    for path in paths:
        _require_exists(path)
    return discovery.run(paths)


def _compile_patterns(given: Sequence[str], option: str) -> GitIgnoreSpec | None:
    patterns = [pattern for pattern in given if pattern.strip()]
    if not patterns:
        return None
    for pattern in patterns:
        globs.check(pattern, f"--{option}")
        try:
            GitIgnoreSpec.from_lines([pattern])
        except ValueError:
            raise InputError(f"invalid --{option} pattern '{pattern}'") from None
    return GitIgnoreSpec.from_lines(patterns)


def _require_exists(path: Path) -> None:
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"path not found: {path}") from None
    except OSError:
        pass  # it exists but is unreachable: reported as Skipped during discovery


class Focus:
    """The paths a walk is restricted to (files or folders that changed): a walk goes down the folders
    above them, and yields them and everything below them."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        self._targets = {os.path.abspath(path) for path in paths}
        self._above: set[str] = set()
        for target in self._targets:
            parent = os.path.dirname(target)
            while parent not in self._above and parent != target:
                self._above.add(parent)
                target, parent = parent, os.path.dirname(parent)

    def __bool__(self) -> bool:
        return bool(self._targets)

    def reaches(self, path: str) -> bool:
        """The walk must go into `path` or yield it."""
        return path in self._above or self.covers(path)

    def covers(self, path: str) -> bool:
        """`path` is one of the targets or below one (a stored document there may be pruned)."""
        while True:
            if path in self._targets:
                return True
            parent = os.path.dirname(path)
            if parent == path:
                return False
            path = parent


def may_be_discovered(relative_parts: Sequence[str], *, is_dir: bool | None) -> bool:
    """Whether a walk could yield this path below its root, or something below it, by names alone: it
    passes over hidden and junk names, and files kb does not read (`kb watch` drops other file events with
    this; the walk itself then applies the ignore files and patterns). An ignore file counts: it changes
    what its folder yields. `is_dir` None: not known (a path that was deleted)."""
    if not relative_parts:
        return True  # the root itself
    *folders, name = relative_parts
    if any(folder.startswith(".") or folder in _JUNK_DIR_NAMES for folder in folders):
        return False
    if name in _IGNORE_FILE_NAMES:
        return True
    if name.startswith(".") or (is_dir is not False and name in _JUNK_DIR_NAMES):
        return False
    if is_dir is False:
        suffix = Path(name).suffix.lower()
        return suffix in SUPPORTED_SUFFIXES or suffix in _UNSUPPORTED_HINTS
    return True


def is_ignore_file(path: str | os.PathLike[str]) -> bool:
    return os.path.basename(path) in _IGNORE_FILE_NAMES


@dataclass(frozen=True, slots=True)
class _IgnoreLayer:
    """The .gitignore/.kbignore patterns of one directory."""

    base: str  # the directory, relative to the walk root ("" for the root itself)
    spec: GitIgnoreSpec

    def verdict(self, relative_path: str, is_dir: bool) -> bool | None:
        """True: ignored, False: re-included by a `!` pattern, None: no pattern matched."""
        local = relative_path[len(self.base) + 1 :] if self.base else relative_path
        return self.spec.check_file(local + "/" if is_dir else local).include


@dataclass(slots=True)
class _Frame:
    """A directory being walked."""

    shown: Path  # for Skipped: the given root joined with the relative path
    absolute: str  # not resolved through symlinks: its files' identity
    relative: str  # posix path relative to the walk root, "" for the root
    real: str  # symlinks resolved: identifies the directory for loop detection
    layers: tuple[_IgnoreLayer, ...]
    entries: Iterator[os.DirEntry[str]]
    # Set when `absolute` is longer than PATH_MAX: the directory was listed through this
    # descriptor, and nothing below it can be opened by path.
    descriptor: int | None = None

    def close(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None


class _Discovery:
    def __init__(
        self, *, include: GitIgnoreSpec | None, exclude: GitIgnoreSpec | None, focus: Focus | None = None
    ) -> None:
        self.include = include
        self.exclude = exclude
        self.focus = focus
        self.seen_files: set[str] = set()  # real paths already yielded
        self.walked_dirs: set[str] = set()  # real paths of directories already walked

    def run(self, paths: Sequence[Path]) -> Iterator[Candidate | Skipped]:
        for path in paths:
            yield from self._given_path(path)

    def _given_path(self, path: Path) -> Iterator[Candidate | Skipped]:
        absolute = os.path.abspath(path)  # may itself be longer than PATH_MAX: Skipped below
        if self.focus is not None and not self.focus.reaches(absolute):
            return
        try:
            info = os.stat(absolute)
        except OSError as exc:
            yield Skipped(path, _stat_error_reason(exc, absolute))
            return
        if stat.S_ISDIR(info.st_mode):
            yield from self._walk(path, absolute)
        elif not stat.S_ISREG(info.st_mode):
            yield Skipped(path, "not a regular file")
        elif _source_format_of(path) is None:
            yield Skipped(path, _unsupported_reason(path))
        else:
            # Named explicitly: taken even if hidden, ignored or outside include/exclude.
            yield from self._candidate(absolute, _real_path(absolute), info)

    def _walk(self, root: Path, absolute_root: str) -> Iterator[Candidate | Skipped]:
        real_root = _real_path(absolute_root)
        if real_root in self.walked_dirs:
            return
        stack: list[_Frame] = []
        try:
            first = yield from self._open_dir(root, absolute_root, "", real_root, None)
            if first is not None:
                stack.append(first)
            while stack:
                frame = stack[-1]
                entry = next(frame.entries, None)
                if entry is None:
                    stack.pop().close()
                    continue
                if entry.name.startswith("."):
                    continue  # hidden, including .git, .venv and the ignore files themselves
                found = yield from self._visit(frame, entry, stack)
                if found is not None:
                    stack.append(found)
        finally:  # also when the caller stops early
            for frame in stack:
                frame.close()

    def _open_dir(
        self, shown: Path, absolute: str, relative: str, real: str, parent: _Frame | None
    ) -> Generator[Skipped, None, _Frame | None]:
        """List a directory and read its ignore files; yields problems, returns the frame."""
        self.walked_dirs.add(real)
        try:
            entries, descriptor = _list_dir(absolute, parent)
        except OSError as exc:
            yield Skipped(shown, _os_error_reason(exc, absolute))
            return None
        layers = parent.layers if parent is not None else ()
        try:
            spec = _read_ignore_files(entries, descriptor)
        except OSError as exc:
            yield Skipped(shown, f"could not read its ignore file ({_os_error_reason(exc)})")
            spec = None
        if spec is not None:
            layers = (*layers, _IgnoreLayer(relative, spec))
        return _Frame(shown, absolute, relative, real, layers, iter(entries), descriptor)

    def _visit(
        self, frame: _Frame, entry: os.DirEntry[str], stack: list[_Frame]
    ) -> Generator[Candidate | Skipped, None, _Frame | None]:
        """Handle one directory entry; returns a frame when it is a directory to walk."""
        relative = f"{frame.relative}/{entry.name}" if frame.relative else entry.name
        path = os.path.join(frame.absolute, entry.name)
        if self.focus is not None and not self.focus.reaches(path):
            return None
        info, problem = _stat_entry(frame, entry, path)
        is_dir = info is not None and stat.S_ISDIR(info.st_mode)
        if is_dir and entry.name in _JUNK_DIR_NAMES:
            return None
        if _is_ignored(frame.layers, relative, is_dir):
            return None
        if is_dir and self._excluded_dir(relative):
            return None
        if is_dir:
            return (yield from self._visit_dir(frame, entry, path, relative, problem, stack))
        # Unsupported files are silently passed over (a docs folder also holds images), except documents
        # kb could read in another format: the user hears what to do.
        if not self._wanted(relative):
            return None
        if _source_format_of(Path(entry.name)) is None:
            if Path(entry.name).suffix.lower() in _UNSUPPORTED_HINTS:
                yield Skipped(frame.shown / entry.name, _unsupported_reason(Path(entry.name)))
            return None
        shown = frame.shown / entry.name
        if info is None or problem is not None:
            yield Skipped(shown, problem or "cannot be read")
        elif not stat.S_ISREG(info.st_mode):
            yield Skipped(shown, "not a regular file")
        else:
            yield from self._candidate(path, _entry_real_path(frame, entry, path), info)
        return None

    def _visit_dir(
        self,
        frame: _Frame,
        entry: os.DirEntry[str],
        path: str,
        relative: str,
        problem: str | None,
        stack: list[_Frame],
    ) -> Generator[Skipped, None, _Frame | None]:
        shown = frame.shown / entry.name
        if problem is not None and _is_symlink(entry):
            # Too long to resolve by path, so a loop could not be told apart: not followed.
            yield Skipped(shown, problem)
            return None
        real = _entry_real_path(frame, entry, path)
        if any(open_frame.real == real for open_frame in stack):
            yield Skipped(shown, "symlink loop")
            return None
        if real in self.walked_dirs:
            return None  # reached again through a symlink: its files were already yielded
        return (yield from self._open_dir(shown, path, relative, real, frame))

    def _excluded_dir(self, relative: str) -> bool:
        """Pruning excluded directories saves walking them and reporting problems inside."""
        return self.exclude is not None and self.exclude.match_file(relative + "/")

    def _wanted(self, relative: str) -> bool:
        if self.include is not None and not self.include.match_file(relative):
            return False
        return self.exclude is None or not self.exclude.match_file(relative)

    def _candidate(self, absolute: str, real: str, info: os.stat_result) -> Iterator[Candidate]:
        if real in self.seen_files:
            return
        self.seen_files.add(real)
        yield Candidate(Path(absolute), info.st_size, info.st_mtime_ns)


def _list_dir(absolute: str, parent: _Frame | None) -> tuple[list[os.DirEntry[str]], int | None]:
    """The directory's entries by name, and the descriptor they were listed through if any.

    A path longer than PATH_MAX cannot be listed by path; it is opened inside its parent instead.
    The caller owns the descriptor: entries stat through it.
    """
    try:
        with os.scandir(absolute) as listing:
            return sorted(listing, key=lambda entry: entry.name), None
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG or parent is None or not _CAN_WALK_BY_DESCRIPTOR:
            raise
    with _directory_descriptor(parent) as parent_descriptor:
        descriptor = os.open(os.path.basename(absolute), _DIRECTORY_FLAGS, dir_fd=parent_descriptor)
    try:
        with os.scandir(descriptor) as listing:
            return sorted(listing, key=lambda entry: entry.name), descriptor
    except OSError:
        os.close(descriptor)
        raise


@contextmanager
def _directory_descriptor(frame: _Frame) -> Iterator[int]:
    """A descriptor of the frame's directory, its own or one opened for the moment."""
    if frame.descriptor is not None:
        yield frame.descriptor
        return
    descriptor = os.open(frame.absolute, _DIRECTORY_FLAGS)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


def _read_ignore_files(entries: list[os.DirEntry[str]], descriptor: int | None) -> GitIgnoreSpec | None:
    by_name = {entry.name: entry for entry in entries}
    lines: list[str] = []
    for name in _IGNORE_FILE_NAMES:
        entry = by_name.get(name)
        # is_file(): a FIFO named .gitignore would block open() forever.
        if entry is not None and entry.is_file():
            with open(
                entry.path,  # just the name when listed through a descriptor
                encoding="utf-8",
                errors="replace",
                opener=None if descriptor is None else _opener_in(descriptor),
            ) as file:
                lines.extend(file.read().splitlines())
    valid = [line for line in lines if _is_valid_ignore_line(line)]
    return GitIgnoreSpec.from_lines(valid) if valid else None


def _is_valid_ignore_line(line: str) -> bool:
    """git silently skips patterns it cannot parse; so do we."""
    try:
        GitIgnoreSpec.from_lines([line])
    except ValueError:
        return False
    return True


def _opener_in(descriptor: int) -> Callable[[str, int], int]:
    def opener(name: str, flags: int) -> int:
        return os.open(name, flags, dir_fd=descriptor)

    return opener


def _stat_entry(
    frame: _Frame, entry: os.DirEntry[str], path: str
) -> tuple[os.stat_result | None, str | None]:
    """The entry's stat (through symlinks), and why it cannot be used by path, if so.

    A path longer than PATH_MAX still gets its stat, through its directory's descriptor, so that
    the walk can go on below it and report the documents there.
    """
    try:
        info = entry.stat()
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            return None, _stat_error_reason(exc, path)
        return _stat_in(frame, entry.name), _too_long_reason(path)
    return info, None if frame.descriptor is None else _too_long_reason(path)


def _stat_in(frame: _Frame, name: str) -> os.stat_result | None:
    if not _CAN_WALK_BY_DESCRIPTOR:
        return None
    try:
        with _directory_descriptor(frame) as descriptor:
            return os.stat(name, dir_fd=descriptor)
    except OSError:
        return None


def _is_symlink(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return True  # unknown: assume the worse


def _entry_real_path(frame: _Frame, entry: os.DirEntry[str], path: str) -> str:
    """The entry's path with symlinks resolved, cheaply when the entry is not a symlink."""
    return _real_path(path) if _is_symlink(entry) else os.path.join(frame.real, entry.name)


def _real_path(path: str) -> str:
    try:
        return os.path.realpath(path)
    except OSError:  # a link that changed while it was resolved
        return path


def _is_ignored(layers: tuple[_IgnoreLayer, ...], relative: str, is_dir: bool) -> bool:
    # As in git, a deeper ignore file overrides a shallower one; the first verdict found wins.
    for layer in reversed(layers):
        verdict = layer.verdict(relative, is_dir)
        if verdict is not None:
            return verdict
    return False


def _stat_error_reason(exc: OSError, path: str) -> str:
    if isinstance(exc, FileNotFoundError | NotADirectoryError) and os.path.islink(path):
        return "broken symlink"
    return _os_error_reason(exc, path)


def _os_error_reason(exc: OSError, path: str | None = None) -> str:
    if exc.errno == errno.ENAMETOOLONG and path is not None:
        return _too_long_reason(path)
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return (exc.strerror or type(exc).__name__).lower()


def _too_long_reason(path: str) -> str:
    return f"path too long ({len(path):,} characters)"


def _unsupported_reason(path: Path) -> str:
    if not path.suffix:
        return "unsupported file type (no extension)"
    hint = _UNSUPPORTED_HINTS.get(path.suffix.lower())
    return f"unsupported file type '{path.suffix}'" + (f" ({hint})" if hint else "")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_document(candidate: Candidate, *, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedDocument | Skipped:
    try:
        data, mtime_ns = _read_regular_file(candidate.path, max_bytes)
    except _Unusable as unusable:
        return Skipped(candidate.path, unusable.reason)
    return load_bytes(data, path=candidate.path, mtime_ns=mtime_ns)


def load_bytes(
    data: bytes, *, path: Path, fmt_hint: str | None = None, mtime_ns: int = 0
) -> LoadedDocument | Skipped:
    """Decode and convert a document's bytes (also used for stdin, `kb ingest -`).

    The format comes from `fmt_hint` (a format name or a suffix such as "md"), else from the
    path's suffix, else it is Markdown. An unknown `fmt_hint` raises InputError.
    """
    source_format = _resolve_format(path, fmt_hint)
    try:
        converted = _convert_bytes(data, source_format)
    except (_Unusable, UnreadableDocument) as unusable:
        return Skipped(path, unusable.reason)
    return LoadedDocument(
        path=path,
        text=converted.text,
        fmt="text" if source_format == "text" else "markdown",
        source_format=source_format,
        title=converted.title or path_to_text(path.stem),
        metadata=converted.metadata,
        content_sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        mtime_ns=mtime_ns,
        page_starts=converted.page_starts,
    )


def _read_regular_file(path: Path, max_bytes: int) -> tuple[bytes, int]:
    """The file's bytes and mtime, refusing anything that is not a regular file.

    O_NONBLOCK: the file may have been replaced by a FIFO since discovery, and opening a FIFO
    without it blocks until a writer appears.
    """
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise _Unusable(_stat_error_reason(exc, str(path))) from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise _Unusable("not a regular file")
        if info.st_size > max_bytes:
            raise _Unusable(f"larger than the {_format_size(max_bytes)} limit")
        data = _read_at_most(descriptor, max_bytes + 1)
        if len(data) > max_bytes:  # it grew since fstat
            raise _Unusable(f"larger than the {_format_size(max_bytes)} limit")
        return data, info.st_mtime_ns
    except OSError as exc:
        raise _Unusable(_os_error_reason(exc)) from None
    finally:
        os.close(descriptor)


def _read_at_most(descriptor: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(descriptor, min(remaining, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _format_size(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def _source_format_of(path: Path) -> str | None:
    return SUPPORTED_SUFFIXES.get(path.suffix.lower())


def _resolve_format(path: Path, fmt_hint: str | None) -> str:
    if fmt_hint is None:
        return _source_format_of(path) or "markdown"
    hint = fmt_hint.strip().lower()
    if hint in SOURCE_FORMATS:
        return hint
    by_suffix = SUPPORTED_SUFFIXES.get("." + hint.removeprefix("."))
    if by_suffix is None:
        expected = ", ".join(SOURCE_FORMATS)
        raise InputError(f"unknown format '{fmt_hint}' (expected one of: {expected})")
    return by_suffix


def _decode(data: bytes, source_format: str) -> str:
    """Strict UTF-8 (or UTF-16 with a BOM; HTML also in the charset it declares), BOM removed, LF line
    ends, Unicode NFC."""
    if not data:
        raise _Unusable("empty file")
    if data.startswith(_UTF16_BOMS):
        text = _decode_utf16(data)
    else:
        nul_offset = data.find(b"\x00")
        if nul_offset >= 0:
            raise _Unusable(f"binary content (NUL byte at offset {nul_offset})")
        text = _decode_html(data) if source_format == "html" else _decode_utf8(data)
    if not text.strip():
        raise _Unusable("empty file")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _decode_utf8(data: bytes) -> str:
    bom_length = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        return data[bom_length:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom_length + exc.start
        raise _Unusable(f"not valid UTF-8 (byte 0x{data[offset]:02x} at offset {offset})") from None


# Labels a browser reads as another encoding (the WHATWG Encoding standard): pages that say ISO-8859-1 or
# ASCII are windows-1252 in practice, and a <meta> cannot mean UTF-16 (the bytes it is in are not).
_BROWSER_CODECS = {
    "ascii": "cp1252",
    "iso8859-1": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gbk",
    "utf-16": "utf-8",
    "utf-16-be": "utf-8",
    "utf-16-le": "utf-8",
}
# windows-1252 as browsers decode it: the five bytes Python's cp1252 leaves undefined map to U+0081 etc.
_WINDOWS_1252 = "".join(bytes([byte]).decode("cp1252", "ignore") or chr(byte) for byte in range(256))


def _decode_html(data: bytes) -> str:
    """UTF-8 when it is valid (what kb has always read, whatever a stale declaration says), else the
    charset the page declares, read as a browser reads it."""
    try:
        return _decode_utf8(data)
    except _Unusable as not_utf8:
        label = declared_charset(data)
        if label is None:
            raise _Unusable(f"{not_utf8.reason}, and no charset is declared") from None
        codec = _browser_codec(label)
        if codec is None:
            raise _Unusable(f"{not_utf8.reason}, and its declared charset {label!r} is unknown") from None
        if codec == "utf-8":
            raise
    if codec == "cp1252":
        return codecs.charmap_decode(data, "strict", _WINDOWS_1252)[0]
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise _Unusable(
            f"not valid {label} as declared (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def _browser_codec(label: str) -> str | None:
    """The Python codec that reads what a browser reads for `label`; None for labels no text codec has."""
    try:
        name = codecs.lookup(label).name
        b"".decode(name)  # refuses codecs that do not decode bytes to text (base64, rot13)
    except LookupError:
        return None
    return "utf-8" if name == "utf-8-sig" else _BROWSER_CODECS.get(name, name)


def _decode_utf16(data: bytes) -> str:
    try:
        text = data.decode("utf-16")  # the BOM gives the byte order and is dropped
    except UnicodeDecodeError as exc:
        raise _Unusable(f"not valid UTF-16 (at byte offset {exc.start})") from None
    if "\x00" in text:
        raise _Unusable("binary content (NUL character in UTF-16 text)")
    return text


_NO_TEXT_REASONS = {"markdown": "no text after front matter", "html": "no text in HTML"}


def _convert_bytes(data: bytes, source_format: str) -> Converted:
    binary = _BINARY_CONVERTERS.get(source_format)
    if binary is None:
        return _convert(_decode(data, source_format), source_format)
    if not data:
        raise _Unusable("empty file")
    return binary(data)


def _convert(text: str, source_format: str) -> Converted:
    if source_format == "markdown":
        converted = markdown_document(text)
    elif source_format == "rst":
        converted = rst_document(text)
    elif source_format == "html":
        converted = html_document(text)
    else:
        converted = Converted(text, None)  # plain text: the title is the file stem
    if not converted.text.strip():
        raise _Unusable(_NO_TEXT_REASONS.get(source_format, "no text"))
    return converted
