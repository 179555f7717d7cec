"""Discovery and loading of documents (kb.sources, kb.formats) against a real folder."""

import hashlib
import json
import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kb.core.sources import (
    SUPPORTED_SUFFIXES,
    Candidate,
    Focus,
    LoadedDocument,
    Skipped,
    discover,
    load_bytes,
    load_document,
    may_be_discovered,
    path_to_text,
    text_to_path,
)
from kb.errors import InputError

PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"
BIG_MARKDOWN_BYTES = 12 * 1024 * 1024
LONG_LINE = "x" * 200_000
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
PATH_MAX = 4096  # Linux; macOS has 1024, so deep trees built for Linux are too long there as well

GUIDE = """---
title: The Guide
date: 2024-05-01
tags: [setup, "ünïcode"]
weight: 3
---

# Ignored Because Front Matter Has A Title

Body of the guide.
"""

MANUAL_RST = """\
===========
The Manual
===========

Intro paragraph.

Installation
============

Run it.

# a comment-like line

.. code-block:: python

   x = 1

Details
-------

Fine print.

Usage
=====

Use it.
"""

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
  <title>  Page   Title </title>
  <meta name="Author" content="Ada">
  <style>body { color: red }</style>
  <script>var secret = "script-content";</script>
</head>
<body>
  <h1>Main <em>Heading</em></h1>
  <p>First   paragraph
     spans lines<br>and breaks.</p>
  <script>alert("more-script-content")</script>
  <h2>Second</h2>
  <ul><li>apple</li><li>banana</li></ul>
  <pre>code  stays
   indented</pre>
  <table><tr><th>Name</th><th>Qty</th></tr><tr><td>pear</td><td>2</td></tr></table>
  <template><p>template-content</p></template>
</body>
</html>
"""


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def write_raw(folder: Path, name: bytes, content: bytes) -> bytes:
    """Create a file whose name need not be UTF-8; returns its path as bytes (skips where refused)."""
    path = os.fsencode(folder) + b"/" + name
    try:
        with open(path, "wb") as file:
            file.write(content)
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    return path


def write_deep(root: Path, files: dict[str, str], levels: int = 48) -> str:
    """Create `files` in root/00xx…/01xx…/…, whose absolute path is longer than PATH_MAX.

    Built through directory descriptors, since no call can take the whole path. Returns the
    deepest directory's path.
    """
    names = [f"{level:02d}" + "x" * 198 for level in range(levels)]
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=descriptor)
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = below
        for name, content in files.items():
            file = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=descriptor)
            os.write(file, content.encode())
            os.close(file)
    finally:
        os.close(descriptor)
    deepest = os.path.join(root, *names)
    assert len(deepest) > PATH_MAX
    return deepest


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A docs folder with good files, ignored/hidden files and every kind of bad input."""
    base = tmp_path_factory.mktemp("sources")
    root = base / "docs"
    write(root / ".gitignore", "build/\n*.tmp.md\n!keep.tmp.md\n")
    write(root / "guide.md", GUIDE)
    write(root / "notes with spaces.txt", "Plain notes.\nSecond line.\n")
    write(root / "cafe\u0301 ünïcode.md", "# Café\n\nnaïve text — 日本語\n")
    write(root / "manual.rst", MANUAL_RST)
    write(root / "page.html", PAGE_HTML)
    write(root / "UPPER.MD", "# Upper case suffix\n")
    write(root / "image.png", PNG_HEADER)
    write(root / "draft.tmp.md", "# ignored by *.tmp.md\n")
    write(root / "keep.tmp.md", "# re-included by !keep.tmp.md\n")
    write(root / "build" / "out.md", "# ignored build output\n")
    write(root / ".hidden" / "secret.md", "# hidden directory\n")
    write(root / ".hidden-file.md", "# hidden file\n")
    write(root / "node_modules" / "pkg" / "readme.md", "# junk\n")
    write(root / "local.md", "# only ignored inside nested/\n")
    write(root / "nested" / ".gitignore", "local.md\n")
    write(root / "nested" / "local.md", "# ignored by the nested .gitignore\n")
    write(root / "nested" / "deeper" / ".kbignore", "skip.md\n")
    write(root / "nested" / "deeper" / "skip.md", "# ignored by .kbignore\n")
    write(root / "nested" / "deeper" / "deep.md", "# Deep\n")
    write(root / "nested" / "build.md", "# a file, so build/ does not match it\n")
    (root / "zz-alias").symlink_to(root / "nested", target_is_directory=True)
    write(base / "outside" / "external.md", "# External\n")
    (root / "external-link.md").symlink_to(base / "outside" / "external.md")

    bad = root / "bad"
    write(bad / "empty.md", b"")
    write(bad / "blank.md", b"\xef\xbb\xbf  \r\n\t\n")
    write(bad / "binary.md", PNG_HEADER)
    write(bad / "invalid-utf8.md", b"fine start \xff then garbage")
    line = b"Some words in a line of a big Markdown file, repeated many times.\n"
    write(bad / "big.md", b"# Big\n\n" + line * (BIG_MARKDOWN_BYTES // len(line)))
    write(bad / "long-line.txt", LONG_LINE)
    write(bad / "bom-crlf.md", b"\xef\xbb\xbf# Windows\r\nline one\r\nline two\rline three\r\n")
    write(bad / "front-matter-only.md", "---\ntitle: Nothing else\n---\n\n  \n")
    os.mkfifo(bad / "pipe.md")
    (bad / "dangling.md").symlink_to(bad / "does-not-exist.md")
    (bad / "loop").symlink_to(bad, target_is_directory=True)
    (bad / "self-loop.md").symlink_to(bad / "self-loop.md")
    return root


def relative_names(root: Path, items: Iterable[Candidate | Skipped]) -> list[str]:
    return [item.path.relative_to(root).as_posix() for item in items]


def candidates(items: Iterable[Candidate | Skipped]) -> list[Candidate]:
    return [item for item in items if isinstance(item, Candidate)]


def skipped_reasons(root: Path, items: Iterable[Candidate | Skipped]) -> dict[str, str]:
    return {
        item.path.relative_to(root).as_posix(): item.reason for item in items if isinstance(item, Skipped)
    }


def load(path: Path) -> LoadedDocument:
    info = path.stat()
    result = load_document(Candidate(path, info.st_size, info.st_mtime_ns))
    assert isinstance(result, LoadedDocument), result
    return result


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


def test_discover_finds_supported_files_and_honours_ignore_rules(tree: Path) -> None:
    found = relative_names(tree, candidates(discover([tree])))

    assert sorted(found) == sorted(
        [
            "UPPER.MD",
            "bad/big.md",
            "bad/binary.md",
            "bad/blank.md",
            "bad/bom-crlf.md",
            "bad/empty.md",
            "bad/front-matter-only.md",
            "bad/invalid-utf8.md",
            "bad/long-line.txt",
            "cafe\u0301 ünïcode.md",
            "external-link.md",
            "guide.md",
            "keep.tmp.md",
            "local.md",
            "manual.rst",
            "nested/build.md",
            "nested/deeper/deep.md",
            "notes with spaces.txt",
            "page.html",
        ]
    )


@pytest.mark.parametrize(
    "changed",
    [
        ["guide.md"],
        ["nested"],  # a folder: everything below it, its ignore files applied
        ["nested/deeper/deep.md", "bad/pipe.md", "local.md"],
        ["nested/local.md", "nested/deeper/skip.md", "build/out.md", "draft.tmp.md", "no-such-file.md"],
        ["bad/loop"],
        [""],  # the root itself: the whole walk
    ],
)
def test_a_focused_walk_finds_what_the_whole_walk_finds_there(tree: Path, changed: list[str]) -> None:
    # `kb watch` ingests a burst by walking only what changed: the same files, ignores and problems.
    focus = Focus([os.path.join(tree, name) for name in changed])
    whole = [item for item in discover([tree]) if focus.covers(os.path.abspath(item.path))]
    assert list(discover([tree], focus=focus)) == whole
    assert bool(whole) == (changed[0] != "nested/local.md")  # that one: ignored files only


def test_watch_events_are_kept_by_name_as_the_walk_would_reach_them() -> None:
    assert may_be_discovered(("docs", "guide.md"), is_dir=False)
    assert may_be_discovered(("docs", "new-folder"), is_dir=True)
    assert may_be_discovered(("docs", "gone"), is_dir=None)  # deleted: a file or a folder
    assert may_be_discovered(("docs", ".kbignore"), is_dir=False)  # changes what its folder yields
    assert not may_be_discovered(("docs", "photo.png"), is_dir=False)
    assert not may_be_discovered((".git", "index"), is_dir=False)
    assert not may_be_discovered(("docs", ".guide.md.swp"), is_dir=False)
    assert not may_be_discovered(("node_modules", "pkg", "README.md"), is_dir=False)
    assert not may_be_discovered(("node_modules",), is_dir=None)


def test_discover_reports_unusable_entries_with_specific_reasons(tree: Path) -> None:
    assert skipped_reasons(tree, discover([tree])) == {
        "bad/dangling.md": "broken symlink",
        "bad/loop": "symlink loop",
        "bad/pipe.md": "not a regular file",
        "bad/self-loop.md": "symlink loop",
    }


def test_discover_is_deterministic_and_yields_each_file_once(tree: Path) -> None:
    first = list(discover([tree]))
    assert first == list(discover([tree]))
    real_paths = [item.path.resolve() for item in candidates(first)]
    assert len(real_paths) == len(set(real_paths))
    # The directory reached again through the zz-alias symlink adds nothing.
    assert not [name for name in relative_names(tree, first) if name.startswith("zz-alias")]


def test_candidates_are_absolute_link_paths_with_stat_data(tree: Path) -> None:
    by_name = {item.path.name: item for item in candidates(discover([tree]))}
    link = by_name["external-link.md"]
    assert link.path == tree / "external-link.md"  # the link's path, not its target's
    assert link.path.is_absolute()
    assert link.size == len("# External\n")
    assert link.mtime_ns == (tree / "external-link.md").stat().st_mtime_ns


def test_discover_makes_relative_roots_absolute(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree / "nested")
    found = candidates(discover([Path("deeper")]))
    assert [item.path for item in found] == [tree / "nested" / "deeper" / "deep.md"]


def test_include_and_exclude_filter_walked_files(tree: Path) -> None:
    results = list(discover([tree], include=["*.md"], exclude=["bad/**", "nested/"]))
    assert skipped_reasons(tree, results) == {}  # excluded directories are not even walked
    found = relative_names(tree, candidates(results))
    # Patterns are case-sensitive, as in git: "*.md" does not take UPPER.MD.
    assert sorted(found) == [
        "cafe\u0301 ünïcode.md",
        "external-link.md",
        "guide.md",
        "keep.tmp.md",
        "local.md",
        # Patterns match the path as walked: the symlinked copy of nested/ is not excluded,
        # and its own .gitignore still ignores local.md.
        "zz-alias/build.md",
        "zz-alias/deeper/deep.md",
    ]


def test_include_keeps_only_matching_files(tree: Path) -> None:
    results = list(discover([tree], include=["*.rst", "nested/deeper/*"]))
    assert relative_names(tree, candidates(results)) == ["manual.rst", "nested/deeper/deep.md"]
    # Include filters files; problems with directories are still reported.
    assert skipped_reasons(tree, results) == {"bad/loop": "symlink loop"}


@pytest.mark.parametrize("pattern", ["!", "\\"])
def test_invalid_pattern_raises_input_error(tree: Path, pattern: str) -> None:
    with pytest.raises(InputError, match="pattern"):
        discover([tree], exclude=[pattern])


def test_missing_path_raises_input_error_before_anything_is_yielded(tree: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        discover([tree, tree / "no-such-file.md"])


def test_explicit_files_are_taken_even_if_hidden_or_ignored(tree: Path) -> None:
    given = [
        tree / ".hidden" / "secret.md",
        tree / "draft.tmp.md",
        tree / "build" / "out.md",
        tree / "image.png",
        tree / "bad" / "pipe.md",
        tree / "bad" / "dangling.md",
        tree / "guide.md",
        tree / "guide.md",  # named twice: yielded once
    ]
    results = list(discover(given, include=["*.txt"]))
    assert relative_names(tree, candidates(results)) == [
        ".hidden/secret.md",
        "draft.tmp.md",
        "build/out.md",
        "guide.md",
    ]
    assert skipped_reasons(tree, results) == {
        "image.png": "unsupported file type '.png'",
        "bad/pipe.md": "not a regular file",
        "bad/dangling.md": "broken symlink",
    }


def test_explicit_directory_symlink_loop_does_not_recurse_forever(tree: Path) -> None:
    results = list(discover([tree / "bad" / "loop"]))
    assert skipped_reasons(tree, results)["bad/loop/loop"] == "symlink loop"
    assert "bad/loop/empty.md" in relative_names(tree, candidates(results))


# --------------------------------------------------------------------------------------------
# Loading every file of the folder
# --------------------------------------------------------------------------------------------


def test_everything_discovered_loads_or_is_skipped_with_a_reason(tree: Path) -> None:
    outcomes: dict[str, LoadedDocument | Skipped] = {}
    for item in discover([tree]):
        name = item.path.relative_to(tree).as_posix()
        outcomes[name] = load_document(item) if isinstance(item, Candidate) else item

    reasons = {name: o.reason for name, o in outcomes.items() if isinstance(o, Skipped)}
    assert reasons == {
        "bad/empty.md": "empty file",
        "bad/blank.md": "empty file",
        "bad/binary.md": "binary content (NUL byte at offset 8)",
        "bad/invalid-utf8.md": "not valid UTF-8 (byte 0xff at offset 11)",
        "bad/front-matter-only.md": "no text after front matter",
        "bad/dangling.md": "broken symlink",
        "bad/loop": "symlink loop",
        "bad/pipe.md": "not a regular file",
        "bad/self-loop.md": "symlink loop",
    }
    for name, outcome in outcomes.items():
        if isinstance(outcome, LoadedDocument):
            assert outcome.text.strip(), name
            assert "\r" not in outcome.text, name
            assert unicodedata.is_normalized("NFC", outcome.text), name
            json.dumps(outcome.metadata)


def test_big_markdown_file_loads(tree: Path) -> None:
    document = load(tree / "bad" / "big.md")
    assert document.size >= BIG_MARKDOWN_BYTES - 100
    assert document.title == "Big"
    assert document.fmt == "markdown"


def test_long_line_without_spaces_loads(tree: Path) -> None:
    document = load(tree / "bad" / "long-line.txt")
    assert document.text == LONG_LINE
    assert (document.fmt, document.source_format) == ("text", "text")
    assert document.title == "long-line"  # plain text is titled by its file stem


def test_bom_and_crlf_are_normalised(tree: Path) -> None:
    document = load(tree / "bad" / "bom-crlf.md")
    assert document.text == "# Windows\nline one\nline two\nline three\n"
    assert document.title == "Windows"
    raw = (tree / "bad" / "bom-crlf.md").read_bytes()
    assert document.content_sha256 == hashlib.sha256(raw).hexdigest()


def test_text_is_unicode_nfc(tree: Path) -> None:
    document = load(tree / "cafe\u0301 ünïcode.md")
    assert document.title == "Café" and unicodedata.is_normalized("NFC", document.title)
    assert "naïve text — 日本語" in document.text


def test_size_limit_skips_without_reading(tree: Path) -> None:
    path = tree / "guide.md"
    info = path.stat()
    result = load_document(Candidate(path, info.st_size, info.st_mtime_ns), max_bytes=1024 // 8)
    assert result == Skipped(path, "larger than the 128 bytes limit")
    big = tree / "bad" / "big.md"
    result = load_document(Candidate(big, 0, 0), max_bytes=1024 * 1024)
    assert result == Skipped(big, "larger than the 1 MiB limit")


def test_loading_a_fifo_does_not_block(tree: Path) -> None:
    pipe = tree / "bad" / "pipe.md"
    assert load_document(Candidate(pipe, 0, 0)) == Skipped(pipe, "not a regular file")


def test_loading_a_vanished_file_is_skipped(tree: Path) -> None:
    gone = tree / "vanished.md"
    assert load_document(Candidate(gone, 1, 0)) == Skipped(gone, "file not found")


def test_unreadable_files_and_directories_are_skipped(tmp_path: Path) -> None:
    if IS_ROOT:
        pytest.skip("running as root: chmod cannot make a file unreadable")
    secret = write(tmp_path / "secret.md", "# Secret\n")
    locked = write(tmp_path / "locked" / "inside.md", "# Inside\n").parent
    secret.chmod(0)
    locked.chmod(0)
    try:
        results = list(discover([tmp_path]))
        assert Skipped(locked, "permission denied") in results
        [candidate] = candidates(results)
        assert load_document(candidate) == Skipped(secret, "permission denied")
    finally:
        locked.chmod(0o755)
        secret.chmod(0o644)


def test_permission_errors_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same paths as the chmod test, simulated so that they also run as root."""
    secret = write(tmp_path / "secret.md", "# Secret\n")
    locked = write(tmp_path / "locked" / "inside.md", "# Inside\n").parent
    real_scandir, real_open = os.scandir, os.open

    def scandir(path: str) -> "os._ScandirIterator[str]":
        if path == str(locked):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    def open_file(path: Path | str, flags: int, *args: int) -> int:
        if Path(path) == secret:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "open", open_file)
    results = list(discover([tmp_path]))
    assert Skipped(locked, "permission denied") in results
    [candidate] = candidates(results)
    assert load_document(candidate) == Skipped(secret, "permission denied")


def test_paths_longer_than_path_max_are_reported_with_their_length(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "good.md", "# Good\n")
    deepest = write_deep(
        root,
        {
            "deep.md": "# Deep\n\nFar down.\n",
            "ignored.md": "# Ignored by the .kbignore beside it\n",
            ".kbignore": "ignored.md\n",
            ".hidden.md": "# hidden\n",
            "image.png": "not a document",
        },
    )
    deep = os.path.join(deepest, "deep.md")
    found = list(discover([root]))
    assert [item.path for item in candidates(found)] == [root / "good.md"]
    assert [(item.path, item.reason) for item in found if isinstance(item, Skipped)] == [
        (Path(deep), f"path too long ({len(deep):,} characters)")
    ]


def test_loading_a_path_longer_than_path_max_is_skipped(tmp_path: Path) -> None:
    deep = os.path.join(write_deep(tmp_path, {"deep.md": "# Deep\n"}), "deep.md")
    result = load_document(Candidate(Path(deep), 7, 0))
    assert result == Skipped(Path(deep), f"path too long ({len(deep):,} characters)")


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("/d/café 日本.md".encode(), "/d/café 日本.md"),
        (b"/d/caf\xe9.md", "/d/caf\\xe9.md"),
        (b"/d/\xed\xa0\x80.md", "/d/\\xed\\xa0\\x80.md"),  # an encoded surrogate is not UTF-8 either
        (b"/d/caf\\xe9.md", "/d/caf\\x5cxe9.md"),  # a backslash that would read as an escape
        (b"/d/\\x5c", "/d/\\x5cx5c"),
        (b"/d/\\\xff", "/d/\\\\xff"),  # a backslash, then a byte that is not UTF-8
        (b"/d/a\\b\\x41\\x5\\\\", "/d/a\\b\\x41\\x5\\\\"),  # other backslashes are kept
    ],
)
def test_path_text_escapes_only_what_utf8_cannot_hold(raw: bytes, text: str) -> None:
    assert path_to_text(os.fsdecode(raw)) == text
    assert os.fsencode(text_to_path(text)) == raw


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=40) | st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_path_text_is_valid_utf8_and_maps_back_to_the_exact_bytes(raw: bytes) -> None:
    text = path_to_text(os.fsdecode(raw))
    text.encode("utf-8")  # storable in SQLite and PostgreSQL
    assert os.fsencode(text_to_path(text)) == raw


@given(name=st.text().filter(lambda s: "\\" not in s and not any(0xD800 <= ord(c) < 0xE000 for c in s)))
def test_path_text_leaves_utf8_names_without_backslashes_alone(name: str) -> None:
    assert path_to_text(name) == name == text_to_path(name)


def test_undecodable_file_names_are_found_and_loaded(tmp_path: Path) -> None:
    raw = write_raw(tmp_path, b"caf\xe9.txt", b"Latin-1 name, UTF-8 text.\n")
    [candidate] = candidates(discover([tmp_path]))
    assert os.fsencode(candidate.path) == raw
    loaded = load_document(candidate)
    assert isinstance(loaded, LoadedDocument)
    assert loaded.title == "caf\\xe9"  # the stem, as text the database can hold


def test_a_fifo_named_gitignore_is_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".gitignore")
    write(tmp_path / "a.md", "# A\n")
    assert [item.path.name for item in discover([tmp_path])] == ["a.md"]


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------


def test_front_matter_becomes_metadata_and_title(tree: Path) -> None:
    document = load(tree / "guide.md")
    assert document.title == "The Guide"
    assert document.metadata == {
        "title": "The Guide",
        "date": "2024-05-01",
        "tags": ["setup", "ünïcode"],
        "weight": 3,
    }
    assert document.text.startswith("# Ignored Because Front Matter Has A Title")
    assert "title:" not in document.text


def test_malformed_front_matter_keeps_the_document() -> None:
    result = load_bytes(b"---\ntitle: [unclosed\n---\n# Heading\nBody\n", path=Path("x.md"))
    assert isinstance(result, LoadedDocument)
    assert result.text == "# Heading\nBody\n"
    assert result.title == "Heading"
    assert set(result.metadata) == {"front_matter_error"}


def test_markdown_title_comes_from_headings_outside_code_else_the_stem() -> None:
    fenced = load_bytes(b"```\n# not a title\n```\n\n# Real Title\n", path=Path("a.md"))
    assert isinstance(fenced, LoadedDocument) and fenced.title == "Real Title"
    top_level = load_bytes(b"### Minor\n## Chapter\ntext\n", path=Path("a.md"))
    assert isinstance(top_level, LoadedDocument) and top_level.title == "Chapter"
    untitled = load_bytes(b"No heading\n\n```\n# in code\n```\n", path=Path("dir/my notes.md"))
    assert isinstance(untitled, LoadedDocument) and untitled.title == "my notes"


def test_rst_titles_become_markdown_headings(tree: Path) -> None:
    document = load(tree / "manual.rst")
    assert (document.fmt, document.source_format) == ("markdown", "rst")
    assert document.title == "The Manual"
    headings = [line for line in document.text.splitlines() if line.startswith("#")]
    assert headings == ["# The Manual", "## Installation", "### Details", "## Usage"]
    assert "\\# a comment-like line" in document.text  # escaped: not a heading
    assert "   x = 1" in document.text
    assert "=====" not in document.text and "-------" not in document.text


def test_html_is_converted_to_markdown_like_text(tree: Path) -> None:
    document = load(tree / "page.html")
    assert (document.fmt, document.source_format) == ("markdown", "html")
    assert document.title == "Page Title"
    assert document.metadata == {"lang": "en", "author": "Ada"}
    text = document.text
    assert "# Main Heading" in text.splitlines()
    assert "## Second" in text.splitlines()
    assert "First paragraph spans lines\nand breaks." in text
    assert "- apple\n- banana" in text
    assert "```\ncode  stays\n   indented\n```" in text
    assert "| Name | Qty |\n| --- | --- |\n| pear | 2 |" in text
    for unwanted in ("<", ">", "script-content", "template-content", "color: red"):
        assert unwanted not in text


def test_html_without_text_is_skipped() -> None:
    result = load_bytes(b"<html><body><script>x()</script></body></html>", path=Path("a.html"))
    assert result == Skipped(Path("a.html"), "no text in HTML")


def test_html_title_falls_back_to_h1() -> None:
    result = load_bytes(b"<h1>From H1</h1><p>text</p>", path=Path("a.htm"))
    assert isinstance(result, LoadedDocument) and result.title == "From H1"


# --------------------------------------------------------------------------------------------
# load_bytes (stdin)
# --------------------------------------------------------------------------------------------


def test_load_bytes_defaults_to_markdown() -> None:
    result = load_bytes(b"# From Stdin\r\n\r\nbody", path=Path("-"), mtime_ns=5)
    assert isinstance(result, LoadedDocument)
    assert (result.text, result.title, result.fmt) == (
        "# From Stdin\n\nbody",
        "From Stdin",
        "markdown",
    )
    assert (result.size, result.mtime_ns) == (len(b"# From Stdin\r\n\r\nbody"), 5)


@pytest.mark.parametrize(
    ("hint", "source_format", "fmt"),
    [("html", "html", "markdown"), (".txt", "text", "text"), ("rst", "rst", "markdown")],
)
def test_load_bytes_uses_the_format_hint(hint: str, source_format: str, fmt: str) -> None:
    result = load_bytes(b"Heading\n=======\n\ntext", path=Path("-"), fmt_hint=hint)
    assert isinstance(result, LoadedDocument)
    assert (result.source_format, result.fmt) == (source_format, fmt)


def test_load_bytes_rejects_an_unknown_format_hint() -> None:
    with pytest.raises(InputError, match="unknown format"):
        load_bytes(b"text", path=Path("-"), fmt_hint="odt")


def test_load_bytes_decodes_utf16_with_bom() -> None:
    result = load_bytes("# Wide\nhé".encode("utf-16"), path=Path("-"))
    assert isinstance(result, LoadedDocument) and result.text == "# Wide\nhé"


# libxslt's manual: ISO-8859-1 declared, a copyright sign (0xa9) that is not UTF-8.
LATIN1_PAGE = "<html><head>{meta}<title>libxslt \xa9 1999</title></head><body><p>Caf\xe9 \x93quoted\x94</p>"


@pytest.mark.parametrize(
    "meta",
    [
        '<meta charset="iso-8859-1">',
        "<meta charset=ISO-8859-1>",
        '<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1">',
        "<!-- <meta charset=utf-8> --><META HTTP-EQUIV=content-type CONTENT='text/html;charset=latin1'>",
        '<meta charset="windows-1252">',
    ],
)
def test_html_is_decoded_by_its_declared_charset_as_a_browser_does(meta: str) -> None:
    page = LATIN1_PAGE.format(meta=meta).encode("latin-1")
    result = load_bytes(page, path=Path("xslt.html"))
    assert isinstance(result, LoadedDocument), result
    assert result.title == "libxslt \u00a9 1999"
    assert "Caf\u00e9 \u201cquoted\u201d" in result.text  # ISO-8859-1 read as windows-1252, as browsers do
    assert result.content_sha256 == hashlib.sha256(page).hexdigest()  # of the bytes, as before


def test_html_declaring_a_multibyte_charset_is_read_in_it() -> None:
    page = '<meta charset="shift_jis"><title>\u65e5\u672c\u8a9e</title><p>\u3053\u3093\u306b\u3061\u306f</p>'
    result = load_bytes(page.encode("shift_jis"), path=Path("jp.html"))
    assert isinstance(result, LoadedDocument) and result.title == "\u65e5\u672c\u8a9e", result


@pytest.mark.parametrize(
    ("page", "reason"),
    [
        (LATIN1_PAGE.format(meta=""), "not valid UTF-8 (byte 0xa9 at offset 27), and no charset is declared"),
        (
            LATIN1_PAGE.format(meta="<meta charset=klingon>"),
            "not valid UTF-8 (byte 0xa9 at offset 49), and its declared charset 'klingon' is unknown",
        ),
        ("<p>" + " " * 1024 + "<meta charset=latin1><p>\xa9", "no charset is declared"),  # past 1024 bytes
    ],
)
def test_html_that_no_declaration_explains_is_skipped_with_the_reason(page: str, reason: str) -> None:
    result = load_bytes(page.encode("latin-1"), path=Path("x.html"))
    assert isinstance(result, Skipped) and reason in result.reason


def test_valid_utf8_html_reads_as_before_whatever_it_declares() -> None:
    page = '<meta charset="iso-8859-1"><title>Caf\u00e9</title><p>na\u00efve</p>'.encode()
    result = load_bytes(page, path=Path("x.html"))
    assert isinstance(result, LoadedDocument) and result.title == "Caf\u00e9" and "na\u00efve" in result.text


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize(
    ("suffix", "text"), [(".txt", "Caf\u00e9 \u2014 notes"), (".html", "<p>Caf\u00e9 \u2014 notes")]
)
def test_a_byte_order_mark_decides_the_encoding(codec: str, suffix: str, text: str) -> None:
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}.get(codec, b"")
    declared = "<meta charset=iso-8859-1>" if suffix == ".html" else ""  # the BOM wins over a declaration
    result = load_bytes(bom + (declared + text).encode(codec), path=Path("x" + suffix))
    assert isinstance(result, LoadedDocument), result
    assert "Caf\u00e9 \u2014 notes" in result.text


def test_supported_suffixes() -> None:
    assert SUPPORTED_SUFFIXES[".md"] == "markdown"
    assert SUPPORTED_SUFFIXES[".htm"] == SUPPORTED_SUFFIXES[".html"] == "html"
    assert SUPPORTED_SUFFIXES[".rst"] == "rst"
    assert SUPPORTED_SUFFIXES[".txt"] == "text"


MARKUP = st.text(alphabet=st.sampled_from(list("-=#`~:*<>/ \n\r\tab!é\u0301\ufeff")))
ARBITRARY_DOCUMENTS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.builds(lambda body: ("---\n" + body).encode(), MARKUP),
    MARKUP.map(str.encode),
)


@settings(max_examples=200, deadline=None)
@given(data=ARBITRARY_DOCUMENTS, hint=st.sampled_from(["markdown", "text", "rst", "html"]))
def test_load_bytes_never_raises_on_arbitrary_input(data: bytes, hint: str) -> None:
    result = load_bytes(data, path=Path("-"), fmt_hint=hint)
    if isinstance(result, LoadedDocument):
        assert result.text.strip() and result.title
        assert "\r" not in result.text
        assert unicodedata.is_normalized("NFC", result.text)
        json.dumps(result.metadata, ensure_ascii=False).encode("utf-8")
    else:
        assert result.reason
