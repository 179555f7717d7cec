"""Split normalised document text into chunks sized for the embedding model.

Markdown is cut at headings (never inside fenced code) into sections, and each section is packed
on its own, so editing a paragraph changes only the chunks of its section. Inside a section,
blocks separated by blank lines are packed greedily up to `target_tokens`; a block too big for
`max_tokens` is cut at a sentence, line or word boundary, or as a last resort mid-word.

Markdown blocks that are navigation (a table of contents, a bar of "Next"/"Up" links) are left out.
A chunk with fewer than `min_tokens` of its own joins a neighbour under the same parent heading. A
pipe table over `max_tokens` is split between rows, and each later piece repeats its header rows.

Guarantees: chunk `text` is exactly `document[start:end]`, except in the later pieces of a split
table, whose text is the table's header and delimiter rows, a newline, then `document[start:end]`.
Text has no leading or trailing whitespace, and `estimate_tokens(text) <= max_tokens`. Every
non-whitespace character lies in some chunk, except navigation blocks and the heading lines of
empty sections (a heading directly followed by another heading, by navigation, or by nothing):
their titles live on in the heading paths of the sections below them.

Pure: no I/O, no clock, standard library only.
"""

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    """Chunk sizes in estimated tokens (see `estimate_tokens`).

    A `target_tokens` above `max_tokens` is treated as `max_tokens`. A Markdown chunk with fewer than
    `min_tokens` of its own (its heading lines not counted; at most 1/8 of the target) is merged into a
    neighbour; 0 turns merging off.
    """

    target_tokens: int = 512
    max_tokens: int = 1024
    overlap_tokens: int = 0
    # About 12 words: less says too little to be found by itself, and its vector is mostly its heading.
    min_tokens: int = 16

    def __post_init__(self) -> None:
        if self.target_tokens < 1 or self.max_tokens < 1:
            raise ValueError("target_tokens and max_tokens must be at least 1")
        if self.overlap_tokens < 0 or self.min_tokens < 0:
            raise ValueError("overlap_tokens and min_tokens must not be negative")


@dataclass(frozen=True, slots=True)
class TextChunk:
    ordinal: int
    text: str
    heading_path: tuple[str, ...]
    start: int
    end: int
    token_estimate: int
    page_start: int | None = None  # 1-based, in documents that have pages
    page_end: int | None = None


DEFAULT_OPTIONS = ChunkingOptions()

# --------------------------------------------------------------------------------------------
# Token estimate
# --------------------------------------------------------------------------------------------

# Costs are counted in twentieths of a token, so the cost of a text is an exact integer sum of
# the costs of its pieces whenever it is cut at whitespace (long runs never span whitespace).
_UNITS_PER_TOKEN = 20
_ASCII_UNITS = 5  # English prose: about 4 characters per token
_NON_ASCII_UNITS = 20  # CJK, emoji, accents: about 1 token per character
_LONG_RUN_EXTRA_UNITS = 3  # base64, URLs, minified code: 1 token per 2.5 characters
# A long run is 20+ printable ASCII characters; anything else (whitespace, non-ASCII) ends it.
_LONG_RUN = re.compile(r"[!-~]{20,}")
# The same runs, each matched with the character before it. In mostly-ASCII text this lets the
# regex engine jump from gap to gap instead of trying every letter; in CJK text the plain
# pattern is the fast one, as ASCII characters are rare there.
_LONG_RUN_AFTER_GAP = re.compile(r"[^!-~][!-~]{20,}")
# Every character costs at least `_ASCII_UNITS`, so a text of n tokens has at most 4n characters.
_MAX_CHARS_PER_TOKEN = _UNITS_PER_TOKEN // _ASCII_UNITS


def _cost_units(text: str) -> int:
    non_ascii = 0 if text.isascii() else len(text) - len(text.encode("ascii", "ignore"))
    return (
        _ASCII_UNITS * (len(text) - non_ascii)
        + _NON_ASCII_UNITS * non_ascii
        + _LONG_RUN_EXTRA_UNITS * _long_run_chars(text, mostly_ascii=non_ascii * 2 < len(text))
    )


# Printable ASCII bytes as 1, every other byte (whitespace, controls, any byte of a non-ASCII character) as
# 0: a text has a long run exactly when its translated UTF-8 holds 20 ones in a row, which `bytes.find`
# tells several times faster than the regex can (most prose has no long run at all).
_RUN_BYTES = bytes(1 if 0x21 <= byte <= 0x7E else 0 for byte in range(256))
_RUN_NEEDLE = b"\x01" * 20


def _long_run_chars(text: str, *, mostly_ascii: bool) -> int:
    if text.encode("utf-8", "surrogatepass").translate(_RUN_BYTES).find(_RUN_NEEDLE) < 0:
        return 0
    if not mostly_ascii:
        return sum(map(len, _LONG_RUN.findall(text)))
    runs = _LONG_RUN_AFTER_GAP.findall(text)
    leading_run = _LONG_RUN.match(text)
    leading_chars = 0 if leading_run is None else leading_run.end()
    return sum(map(len, runs)) - len(runs) + leading_chars


def _units_to_tokens(units: int) -> int:
    return -(-units // _UNITS_PER_TOKEN)


def estimate_tokens(text: str) -> int:
    """A cheap, deliberately high estimate of the Gemini token count of `text`.

    Never decreases when text is appended, and lies between len(text) / 4 and len(text).
    """
    return _units_to_tokens(_cost_units(text))


# --------------------------------------------------------------------------------------------
# Markdown structure: headings and fenced code
# --------------------------------------------------------------------------------------------

# The only lines that can change structure: fence lines, ATX headings, setext underlines.
_STRUCTURE_LINE_BODY = (
    r"(?P<line>"
    r"(?P<fence> {0,3}(?P<fence_run>`{3,}|~{3,})(?P<info>.*))"
    r"|(?P<atx> {0,3}(?P<hashes>#{1,6})(?:[ \t](?P<atx_text>.*))?)"
    r"|(?P<underline> {0,3}(?:=+|-+)[ \t]*)"
    r")$"
)
_FIRST_STRUCTURE_LINE = re.compile(_STRUCTURE_LINE_BODY, re.MULTILINE)
# Anchoring on the newline (and peeking at the first character) lets the regex engine skip
# ordinary lines quickly; this scan is a large share of the chunking time.
_LATER_STRUCTURE_LINE = re.compile(r"\n(?= {0,3}[`~#=-])" + _STRUCTURE_LINE_BODY, re.MULTILINE)
_ATX_CLOSING_HASHES = re.compile(r"(?:^|[ \t]+)#+$")
# A list item or block quote line: an underline below it is a thematic break or lazy text.
_CONTAINER_LINE = re.compile(r"[ \t]*(?:(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)|>)")


class _Heading(NamedTuple):
    start: int  # the title line, or the first line of a setext heading's paragraph
    body_start: int  # just after the heading's last line
    level: int
    title: str


class _Section(NamedTuple):
    start: int
    body_start: int
    end: int
    heading_path: tuple[str, ...]


class _MarkdownScan:
    """The headings and fenced code spans of a Markdown text, found in one pass."""

    def __init__(self, text: str) -> None:
        self.headings: list[_Heading] = []
        self.fences: list[tuple[int, int]] = []
        self._text = text
        self._open_fence: tuple[str, int, int] | None = None  # (char, length, start)
        # A setext heading's paragraph cannot reach back past the last structural line.
        self._paragraph_floor = 0
        first_line = _FIRST_STRUCTURE_LINE.match(text)
        if first_line is not None:
            self._visit(first_line)
        for line in _LATER_STRUCTURE_LINE.finditer(text):
            self._visit(line)
        if self._open_fence is not None:  # an unclosed fence runs to the end (CommonMark)
            self.fences.append((self._open_fence[2], len(text)))

    def _visit(self, line: re.Match[str]) -> None:
        if self._open_fence is not None:
            self._close_fence_if_matching(line)
        elif line["fence"] is not None:
            self._open_fence_if_valid(line)
        elif line["atx"] is not None:
            self._add_atx_heading(line)
        else:
            self._add_setext_heading_if_valid(line)

    def _open_fence_if_valid(self, line: re.Match[str]) -> None:
        run = line["fence_run"]
        if run[0] == "`" and "`" in line["info"]:
            return  # ```inline code``` on one line, not a fence
        self._open_fence = (run[0], len(run), line.start("line"))

    def _close_fence_if_matching(self, line: re.Match[str]) -> None:
        assert self._open_fence is not None
        char, length, start = self._open_fence
        run = line["fence_run"]
        if run and run[0] == char and len(run) >= length and not line["info"].strip():
            self.fences.append((start, line.end()))
            self._open_fence = None
            self._paragraph_floor = line.end()

    def _add_atx_heading(self, line: re.Match[str]) -> None:
        title = (line["atx_text"] or "").strip()
        if title.endswith("#"):
            title = _ATX_CLOSING_HASHES.sub("", title).rstrip()
        self.headings.append(_Heading(line.start("line"), line.end(), len(line["hashes"]), title))
        self._paragraph_floor = line.end()

    def _add_setext_heading_if_valid(self, line: re.Match[str]) -> None:
        paragraph = self._paragraph_above(line.start("line"))
        if paragraph is not None:
            start, title = paragraph
            level = 1 if "=" in line["underline"] else 2
            self.headings.append(_Heading(start, line.end(), level, title))
        self._paragraph_floor = line.end()

    def _paragraph_above(self, underline_start: int) -> tuple[int, str] | None:
        """(start, joined text) of the paragraph right above an underline, if there is one."""
        text, floor = self._text, self._paragraph_floor
        lines: list[str] = []
        line_end = underline_start - 1
        paragraph_start = underline_start
        while line_end > floor:
            line_start = text.rfind("\n", floor, line_end) + 1
            line = text[line_start:line_end]
            if not line.strip():
                break
            if _CONTAINER_LINE.match(line):
                return None
            lines.append(line)
            paragraph_start = line_start
            line_end = line_start - 1
        if not lines or lines[-1].startswith("    "):  # nothing, or indented code
            return None
        return paragraph_start, " ".join(line.strip() for line in reversed(lines))


def _markdown_sections(text_length: int, headings: list[_Heading]) -> list[_Section]:
    """The text before the first heading, then each heading up to the next one."""
    starts = [heading.start for heading in headings]
    if not starts:
        return [_Section(0, 0, text_length, ())]
    ends = [*starts[1:], text_length]
    sections = [_Section(0, 0, starts[0], ())]
    open_headings: list[tuple[int, tuple[str, ...]]] = []  # (level, heading path)
    for heading, end in zip(headings, ends, strict=True):
        while open_headings and open_headings[-1][0] >= heading.level:
            open_headings.pop()
        parent_path = open_headings[-1][1] if open_headings else ()
        path = (*parent_path, heading.title)
        open_headings.append((heading.level, path))
        sections.append(_Section(heading.start, heading.body_start, end, path))
    return sections


# --------------------------------------------------------------------------------------------
# Packing a section into pieces
# --------------------------------------------------------------------------------------------

_NON_SPACE = re.compile(r"\S")
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")
_WORD_START = re.compile(r"(?<=\s)\S")
_LAST_SPACE = re.compile(r"\s+(?=\S*\Z)")
# Where an oversized block may be cut; each pattern's `gap` group is the whitespace to drop.
_BLANK_LINE_GAP = re.compile(r"(?P<gap>\n(?:[ \t]*\n)+)")
_LIST_ITEM_GAP = re.compile(r"(?P<gap>\n)(?=[ \t]*(?:[-+*]|\d{1,9}[.)])[ \t])")
_SENTENCE_GAP = re.compile(
    r"(?:[.!?\u2026][\"'\u201d\u2019)\]]?(?=\s)"  # . ! ? or an ellipsis, maybe then a quote
    r"|[\u3002\uff01\uff1f])"  # a CJK full stop, exclamation or question mark
    r"(?P<gap>\s*)"
)
# Finds the last cut point (start, end of the gap) in text[lo:hi], if any.
_BoundaryFinder = Callable[[str, int, int], tuple[int, int] | None]


class _Piece(NamedTuple):
    start: int
    end: int
    tokens: int
    prefix: str = ""  # text before document[start:end]: the header of a split table's later pieces


def _last_gap(pattern: re.Pattern[str]) -> _BoundaryFinder:
    def find(text: str, lo: int, hi: int) -> tuple[int, int] | None:
        last = None
        for match in pattern.finditer(text, lo, hi):
            last = match
        return None if last is None else last.span("gap")

    return find


def _last_newline(text: str, lo: int, hi: int) -> tuple[int, int] | None:
    newline = text.rfind("\n", lo, hi)
    return None if newline < 0 else (newline, newline + 1)


def _last_space(text: str, lo: int, hi: int) -> tuple[int, int] | None:
    space = _LAST_SPACE.search(text, lo, hi)
    return None if space is None else space.span()


_PROSE_BOUNDARIES = (
    _last_gap(_LIST_ITEM_GAP),
    _last_gap(_SENTENCE_GAP),
    _last_newline,
    _last_space,
)
_CODE_BOUNDARIES = (_last_gap(_BLANK_LINE_GAP), _last_newline, _last_space)


def _splits_long_run(text: str, position: int) -> bool:
    """Whether cutting at `position` could split a long run, making costs not add up."""
    return (
        0 < position < len(text)
        and text[position - 1 : position + 1].isascii()
        and not (text[position - 1].isspace() or text[position].isspace())
    )


class _SectionPacker:
    """Cuts spans of one document into pieces that fit the token budget."""

    def __init__(self, text: str, options: ChunkingOptions, fences: list[tuple[int, int]]) -> None:
        self._text = text
        self._max_tokens = options.max_tokens
        self._target_tokens = min(options.target_tokens, options.max_tokens)
        self._overlap_tokens = options.overlap_tokens
        self._overlap_chars = _MAX_CHARS_PER_TOKEN * options.overlap_tokens
        self._min_block_chars = min(64, _MAX_CHARS_PER_TOKEN * self._target_tokens // 8)
        self._fence_starts = [start for start, _ in fences]
        self._fence_ends = [end for _, end in fences]

    def pack(self, start: int, end: int) -> list[_Piece]:
        pieces: list[_Piece] = []
        position = self._skip_space(start, end)
        while position < end:
            piece, resume = self._next_piece(position, end)
            pieces.append(piece)
            position = self._skip_space(resume, end)
        pieces = self._merge_tiny_tail(pieces)
        if self._overlap_tokens:
            pieces = self._with_overlap(pieces)
        return pieces

    def _next_piece(self, start: int, end: int) -> tuple[_Piece, int]:
        """The most whole blocks from `start` that fit the target, else one block or part of one.

        Returns the piece and where to resume after it.
        """
        if end - start <= _MAX_CHARS_PER_TOKEN * self._target_tokens:  # often a whole section
            stop = self._trim_end(start, end)
            tokens = estimate_tokens(self._text[start:stop])
            if tokens <= self._target_tokens:
                return _Piece(start, stop, tokens), end
        target_units = self._target_tokens * _UNITS_PER_TOKEN
        max_units = self._max_tokens * _UNITS_PER_TOKEN
        fitted: tuple[int, int, int] | None = None  # (cut, resume, cost units of start..cut)
        units = 0
        cut = resume = start
        while resume < end:
            block_end = self._block_end(resume, end)
            if block_end is None:  # the next block is far too big: start cutting it here
                fitted = None
                break
            # Running sum: blocks are cut at whitespace, so their costs add up exactly.
            block_units = _cost_units(self._text[cut : block_end[0]])
            units += block_units
            if units <= target_units:
                fitted = (*block_end, units)
                cut, resume = block_end
            elif block_units > max_units:  # as above; this also avoids leaving a lone heading
                fitted = None
                break
            else:
                if fitted is None and units <= max_units:
                    fitted = (*block_end, units)  # a block between target and max stands alone
                break
        if fitted is None:
            return self._cut_oversized_block(start, end)
        cut, resume, units = fitted
        stop = self._trim_end(start, cut)
        units -= _cost_units(self._text[stop:cut])
        return _Piece(start, stop, _units_to_tokens(units)), resume

    def _block_end(self, block_start: int, end: int) -> tuple[int, int] | None:
        """(start, end) of the blank lines after a block, or (end, end) at the section end.

        None if the block is longer than any text within max_tokens can be. Tiny paragraphs
        are grouped into one block: per-block work would dominate and they pack the same.
        """
        limit = min(end, block_start + _MAX_CHARS_PER_TOKEN * self._max_tokens + 1)
        position = min(limit, block_start + self._min_block_chars)
        while (blank := _BLANK_LINES.search(self._text, position, limit)) is not None:
            if not self._in_fence(blank.start()):
                return blank.span()
            position = blank.end()
        return (end, end) if limit == end else None

    def _cut_oversized_block(self, start: int, end: int) -> tuple[_Piece, int]:
        """A target-sized piece ending inside a block over max_tokens, at the best boundary."""
        hi, units = self._fitting_prefix(start, end)
        lo = start + max(1, (hi - start) // 2)  # a later, lesser boundary beats a tiny piece
        boundaries = _CODE_BOUNDARIES if self._in_fence(hi - 1) else _PROSE_BOUNDARIES
        for find_boundary in boundaries:
            found = find_boundary(self._text, lo, hi)
            if found is not None:
                cut, resume = found
                break
        else:
            cut = resume = hi  # no whitespace at all, e.g. base64: cut mid-word
        stop = self._trim_end(start, cut)
        if _splits_long_run(self._text, stop):
            units = _cost_units(self._text[start:stop])
        else:  # cheaper: the dropped tail is at most half the window
            units -= _cost_units(self._text[stop:hi])
        return _Piece(start, stop, _units_to_tokens(units)), resume

    def _fitting_prefix(self, start: int, end: int) -> tuple[int, int]:
        """(hi, cost units) where text[start:hi] is close to, but within, the target."""
        target_units = self._target_tokens * _UNITS_PER_TOKEN
        hi = min(end, start + _MAX_CHARS_PER_TOKEN * self._target_tokens)
        units = _cost_units(self._text[start:hi])
        while units > target_units:
            width = hi - start
            hi = start + max(1, min(width - 1, width * target_units // units))
            units = _cost_units(self._text[start:hi])
        return hi, units

    def _merge_tiny_tail(self, pieces: list[_Piece]) -> list[_Piece]:
        """Fold a last piece under 1/8 of the target into the previous one, if that still fits."""
        if len(pieces) < 2 or pieces[-1].tokens * 8 >= self._target_tokens:
            return pieces
        previous, last = pieces[-2], pieces[-1]
        tokens = estimate_tokens(self._text[previous.start : last.end])
        if tokens * 4 > self._target_tokens * 5 or tokens > self._max_tokens:
            return pieces
        return [*pieces[:-2], _Piece(previous.start, last.end, tokens)]

    def _with_overlap(self, pieces: list[_Piece]) -> list[_Piece]:
        return pieces[:1] + [self._extend_back(prev, piece) for prev, piece in pairwise(pieces)]

    def _extend_back(self, previous: _Piece, piece: _Piece) -> _Piece:
        """`piece` starting at the earliest word of `previous` that keeps both budgets."""
        text = self._text
        window_start = max(previous.start + 1, previous.end - self._overlap_chars)
        words = _WORD_START.finditer(text, window_start, previous.end)
        word_starts = [word.start() for word in words]

        def fits(start: int) -> bool:
            return (
                estimate_tokens(text[start : previous.end]) <= self._overlap_tokens
                and estimate_tokens(text[start : piece.end]) <= self._max_tokens
            )

        # Both costs only shrink as the start moves right: binary search the first that fits.
        first = bisect.bisect_left(word_starts, True, key=fits)
        if first == len(word_starts):
            return piece
        start = word_starts[first]
        return _Piece(start, piece.end, estimate_tokens(text[start : piece.end]))

    def _in_fence(self, position: int) -> bool:
        index = bisect.bisect_right(self._fence_starts, position) - 1
        return index >= 0 and position < self._fence_ends[index]

    def _skip_space(self, start: int, end: int) -> int:
        non_space = _NON_SPACE.search(self._text, start, end)
        return end if non_space is None else non_space.start()

    def _trim_end(self, start: int, end: int) -> int:
        """`end` moved back over whitespace, but not before `start`; works in slices for speed."""
        while end > start:
            window_start = max(start, end - 64)
            kept = len(self._text[window_start:end].rstrip())
            if kept:
                return window_start + kept
            end = window_start
        return start


# --------------------------------------------------------------------------------------------
# Navigation blocks: link bars and tables of contents
# --------------------------------------------------------------------------------------------

# Inline links, reference links and autolinks; group 1 or 2 is the link's text.
_MARKDOWN_LINK = re.compile(
    r"!?\[([^\]\n]*)\]\([^)\n]*\)|!?\[([^\]\n]*)\]\[[^\]\n]*\]|<(?:https?|ftp|mailto):[^>\s]*>"
)
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-+*]|\d{1,9}[.)])[ \t]+", re.MULTILINE)
_NAVIGATION_WORDS = re.compile(
    r"\b(?:next|previous|prev|up|home|top|contents|table of contents|index|back|forward|go to|"
    r"skip to (?:main )?content|jump to)\b",
    re.IGNORECASE,
)
_NOT_LETTERS = re.compile(r"[\W_]+")
# A block whose letters are at least this share link text is a table of contents (docs/ingest.md).
LINK_TEXT_SHARE = 0.8
_MAX_BAR_CHARS = 400  # a navigation bar is short; a long paragraph of links is something else


def is_navigation_block(block: str) -> bool:
    """A table of contents (a list of two items or more, nearly all link text) or a link bar (a short
    block of links and navigation words only: "Previous: [Closure Example](x.md), Up: [Top](index.md)")."""
    links = list(_MARKDOWN_LINK.finditer(block))
    if not links:
        return False
    unmarked = _LIST_MARKER.sub("", block)
    link_letters = sum(len(_letters(link[1] or link[2] or "")) for link in links)
    all_letters = len(_letters(_MARKDOWN_LINK.sub(lambda link: link[1] or link[2] or "", unmarked)))
    lines = [line for line in block.split("\n") if line.strip()]
    items = sum(1 for line in lines if _LIST_MARKER.match(line))
    if items >= 2 and all_letters and link_letters >= LINK_TEXT_SHARE * all_letters:
        return True
    if len(block) > _MAX_BAR_CHARS:
        return False
    outside = _letters(_NAVIGATION_WORDS.sub(" ", _MARKDOWN_LINK.sub(" ", unmarked)))
    return not outside and (len(links) >= 2 or _NAVIGATION_WORDS.search(block) is not None)


def _letters(text: str) -> str:
    return _NOT_LETTERS.sub("", text)


def navigation_blocks(
    text: str, sections: list[_Section], fences: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """(start, end) of the navigation blocks of a Markdown text, in order; none inside fenced code."""
    fence_starts = [start for start, _ in fences]
    found: list[tuple[int, int]] = []
    for section in sections:
        position = section.body_start
        while position < section.end:
            blank = _BLANK_LINES.search(text, position, section.end)
            block_end = section.end if blank is None else blank.start()
            block = text[position:block_end]
            if "[" in block or "<" in block:
                overlaps_fence = any(
                    start < block_end and position < end
                    for start, end in fences[max(0, bisect.bisect_right(fence_starts, position) - 1) :][:2]
                )
                if not overlaps_fence and is_navigation_block(block.strip()):
                    found.append((position, block_end))
            position = section.end if blank is None else blank.end()
    return found


def _without_spans(start: int, end: int, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [start, end) outside `spans` (sorted, disjoint)."""
    parts: list[tuple[int, int]] = []
    index = bisect.bisect_left(spans, (start, start))
    position = start
    while index < len(spans) and spans[index][0] < end:
        span_start, span_end = spans[index]
        if span_start > position:
            parts.append((position, span_start))
        position = max(position, span_end)
        index += 1
    if position < end:
        parts.append((position, end))
    return parts


def _spans_between(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    index = bisect.bisect_left(spans, (start, start))
    return index < len(spans) and spans[index][0] < end


def _has_own_text(text: str, start: int, end: int, section: _Section) -> bool:
    return _NON_SPACE.search(text, max(start, section.body_start), end) is not None


# --------------------------------------------------------------------------------------------
# Tables: split by rows, each piece under the header
# --------------------------------------------------------------------------------------------

# A pipe table's delimiter row: cells of dashes, maybe with colons, and at least one pipe.
_DELIMITER_ROW = re.compile(
    r"^ {0,3}(?=[^\n]*\|)\|?(?:[ \t]*:?-+:?[ \t]*\|)*[ \t]*:?-+:?[ \t]*\|?[ \t]*$", re.MULTILINE
)


class _Table(NamedTuple):
    start: int  # the header row
    rows_start: int  # just after the delimiter row's newline
    end: int  # the end of the last row


class _TableSplitter:
    """Packs spans of text, splitting each table over max_tokens by rows, its header repeated."""

    def __init__(self, text: str, options: ChunkingOptions, fences: list[tuple[int, int]]) -> None:
        self._text = text
        self._target_units = min(options.target_tokens, options.max_tokens) * _UNITS_PER_TOKEN
        self._max_units = options.max_tokens * _UNITS_PER_TOKEN
        self._tables = [table for table in self._find_tables(fences) if self._too_big(table)]

    def _find_tables(self, fences: list[tuple[int, int]]) -> list[_Table]:
        text, tables = self._text, list[_Table]()
        for delimiter in _DELIMITER_ROW.finditer(text):
            header_end = delimiter.start() - 1
            if header_end <= 0 or delimiter.end() >= len(text) or (tables and header_end < tables[-1].end):
                continue
            header_start = text.rfind("\n", 0, header_end) + 1
            header = text[header_start:header_end]
            if "|" not in header or not header.strip():
                continue
            if any(start <= header_start < end for start, end in fences):
                continue
            end = position = delimiter.end() + 1
            while position < len(text):
                line_end = text.find("\n", position)
                line_end = len(text) if line_end < 0 else line_end
                if "|" not in text[position:line_end] or not text[position:line_end].strip():
                    break
                end, position = line_end, line_end + 1
            if end > delimiter.end() + 1:
                tables.append(_Table(header_start, delimiter.end() + 1, end))
        return tables

    def _too_big(self, table: _Table) -> bool:
        return _cost_units(self._text[table.start : table.end]) > self._max_units

    def pack(self, packer: _SectionPacker, start: int, end: int) -> list[_Piece]:
        pieces: list[_Piece] = []
        position = start
        for table in self._tables:
            if table.start < position or table.end > end:
                continue
            table_pieces = self._split(table)
            if table_pieces is None:
                continue  # rows too big to repeat a header over: packed as any other text
            if _NON_SPACE.search(self._text, position, table.start):
                pieces.extend(packer.pack(position, table.start))
            pieces.extend(table_pieces)
            position = table.end
        if _NON_SPACE.search(self._text, position, end):
            pieces.extend(packer.pack(position, end))
        return pieces

    def _split(self, table: _Table) -> list[_Piece] | None:
        """Target-sized runs of whole rows; every run after the first starts with the header rows."""
        text = self._text
        prefix = text[table.start : table.rows_start - 1] + "\n"
        prefix_units = _cost_units(prefix)
        if prefix_units * 2 > self._max_units:
            return None
        pieces: list[_Piece] = []
        piece_start, units = table.start, prefix_units  # the first piece holds its header itself
        position = table.rows_start
        while position < table.end:
            row_end = text.find("\n", position, table.end)
            row_end = table.end if row_end < 0 else row_end
            row_units = _cost_units(text[position : row_end + 1])  # with its newline
            if prefix_units + row_units > self._max_units:
                return None
            if units + row_units > self._target_units and piece_start < position:
                pieces.append(self._piece(piece_start, position - 1, prefix, first=not pieces))
                piece_start, units = position, prefix_units
            units += row_units
            position = row_end + 1
        pieces.append(self._piece(piece_start, table.end, prefix, first=not pieces))
        return pieces

    def _piece(self, start: int, end: int, prefix: str, *, first: bool) -> _Piece:
        prefix = "" if first else prefix  # the first piece holds the header rows themselves
        return _Piece(start, end, estimate_tokens(prefix + self._text[start:end]), prefix)


# --------------------------------------------------------------------------------------------
# Tiny pieces: merged into a neighbour
# --------------------------------------------------------------------------------------------

_HEADING_LINE = re.compile(r"^ {0,3}(?:#{1,6}(?:[ \t][^\n]*)?|=+[ \t]*|-+[ \t]*)$", re.MULTILINE)

_PathPiece = tuple[_Piece, tuple[str, ...]]


def _merge_tiny_pieces(
    text: str, pieces: list[_PathPiece], navigation: list[tuple[int, int]], options: ChunkingOptions
) -> list[_PathPiece]:
    """Each tiny piece joins the next piece when that one lies under the same parent heading (a sibling
    section or a child), else the previous one, as long as the join fits max_tokens and does not take in
    a navigation block; the joined piece's heading path is what both paths share."""
    tiny = min(options.min_tokens, max(1, min(options.target_tokens, options.max_tokens) // 8))
    if options.min_tokens == 0:
        return pieces
    max_tokens = options.max_tokens

    def is_tiny(item: _PathPiece) -> bool:
        piece = item[0]
        if piece.prefix or piece.tokens >= tiny + 64:
            return False
        return estimate_tokens(_HEADING_LINE.sub("", text[piece.start : piece.end])) < tiny

    def join(first: _PathPiece, second: _PathPiece, parent: tuple[str, ...]) -> _PathPiece | None:
        (a, a_path), (b, b_path) = first, second
        if a.prefix or b.prefix or _spans_between(navigation, a.end, b.start):
            return None
        if first[1][: len(parent)] != parent or second[1][: len(parent)] != parent:
            return None
        tokens = estimate_tokens(text[a.start : b.end])
        if tokens > max_tokens:
            return None
        shared = 0
        while shared < min(len(a_path), len(b_path)) and a_path[shared] == b_path[shared]:
            shared += 1
        return _Piece(a.start, b.end, tokens), a_path[:shared]

    merged: list[_PathPiece] = []

    def settle(item: _PathPiece) -> None:
        joined = join(merged[-1], item, item[1][:-1]) if merged else None
        if joined is None:
            merged.append(item)
        else:
            merged[-1] = joined

    pending: _PathPiece | None = None
    parent: tuple[str, ...] = ()  # the parent heading of the tiny piece that began `pending`
    for item in pieces:
        joined = None if pending is None else join(pending, item, parent)
        if pending is not None and joined is None:
            settle(pending)
        pending = None
        if not is_tiny(joined or item):
            merged.append(joined or item)
            continue
        if joined is None:
            parent = item[1][:-1]
        pending = joined or item
    if pending is not None:
        settle(pending)
    return merged


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------

_MARKDOWN_FORMATS = frozenset({"markdown", "rst", "html"})  # readers turn rst/html into Markdown


def _chunk_sections(
    text: str,
    sections: list[_Section],
    packer: _SectionPacker,
) -> list[TextChunk]:
    chunks: list[TextChunk] = []
    for section in sections:
        if _NON_SPACE.search(text, section.body_start, section.end) is None:
            continue  # empty: nothing under the heading, whose title lives on in child paths
        for piece in packer.pack(section.start, section.end):
            chunks.append(_chunk(text, len(chunks), piece, section.heading_path))
    return chunks


def _chunk(text: str, ordinal: int, piece: _Piece, heading_path: tuple[str, ...]) -> TextChunk:
    return TextChunk(
        ordinal=ordinal,
        text=piece.prefix + text[piece.start : piece.end],
        heading_path=heading_path,
        start=piece.start,
        end=piece.end,
        token_estimate=piece.tokens,
    )


def chunk_markdown(text: str, options: ChunkingOptions = DEFAULT_OPTIONS) -> list[TextChunk]:
    """Chunks of a Markdown text, each within one heading section or a run of tiny ones.

    Navigation blocks are left out, big tables are split by rows under their repeated header, and
    chunks with too little text of their own are merged into a neighbour (see the module docstring).
    """
    scan = _MarkdownScan(text)
    packer = _SectionPacker(text, options, scan.fences)
    sections = _markdown_sections(len(text), scan.headings)
    navigation = navigation_blocks(text, sections, scan.fences)
    tables = _TableSplitter(text, options, scan.fences)
    pieces: list[tuple[_Piece, tuple[str, ...]]] = []
    for section in sections:
        for segment_start, segment_end in _without_spans(section.start, section.end, navigation):
            if not _has_own_text(text, segment_start, segment_end, section):
                continue  # nothing but the heading: its title lives on in the paths below it
            for piece in tables.pack(packer, segment_start, segment_end):
                pieces.append((piece, section.heading_path))
    merged = _merge_tiny_pieces(text, pieces, navigation, options)
    return [_chunk(text, ordinal, piece, path) for ordinal, (piece, path) in enumerate(merged)]


def chunk_plain(text: str, options: ChunkingOptions = DEFAULT_OPTIONS) -> list[TextChunk]:
    """Chunks of plain text: paragraphs packed greedily, no headings."""
    packer = _SectionPacker(text, options, fences=[])
    return _chunk_sections(text, [_Section(0, 0, len(text), ())], packer)


def chunk_document(
    text: str,
    fmt: str,
    options: ChunkingOptions = DEFAULT_OPTIONS,
) -> list[TextChunk]:
    """Chunks of a document whose `fmt` is "markdown", "text", "rst" or "html".

    Readers convert rst and html to Markdown-like text, so those chunk as Markdown.
    """
    if fmt in _MARKDOWN_FORMATS:
        return chunk_markdown(text, options)
    if fmt == "text":
        return chunk_plain(text, options)
    raise ValueError(f"unknown document format {fmt!r}: expected markdown, text, rst or html")


def with_pages(chunks: list[TextChunk], page_starts: Sequence[int]) -> list[TextChunk]:
    """The chunks with the pages they span, given where each page (1, 2, ...) starts in the text."""
    if not page_starts:
        return chunks
    return [
        replace(
            chunk,
            page_start=bisect.bisect_right(page_starts, chunk.start),
            page_end=bisect.bisect_right(page_starts, max(chunk.start, chunk.end - 1)),
        )
        for chunk in chunks
    ]
