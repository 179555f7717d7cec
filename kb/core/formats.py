"""Turn decoded document text into what the chunker reads: Markdown-like text, a title, metadata.

Pure functions on `str`; reading and decoding files is `kb.core.sources`' job. Every converter
returns a `Converted` whose `title` is None when the document has no title of its own (the
caller falls back to the file stem).
"""

import datetime as dt
import math
import re
import tomllib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml
from selectolax.lexbor import LexborHTMLParser, LexborNode

from kb.core.boilerplate import strip_navigation


@dataclass(frozen=True, slots=True)
class Converted:
    text: str
    title: str | None
    metadata: dict[str, object] = field(default_factory=dict)
    page_starts: tuple[int, ...] = ()  # where page 1, 2, ... starts in `text`, for documents with pages


class UnreadableDocument(Exception):
    """A file that cannot become a document (encrypted, broken, no text layer); `reason` is shown as is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# A line that a CommonMark reader would take as an ATX heading.
_HEADING_MARKER = re.compile(r"^( {0,3})(#{1,6})(?=[ \t]|$)", re.MULTILINE)
_ASCII_WHITESPACE = re.compile(r"[ \t\n\r\f]+")


def escape_heading_markers(text: str) -> str:
    """Backslash-escape a leading `#` so converted prose never turns into a heading."""
    return _HEADING_MARKER.sub(r"\1\\\2", text)


# Lines of extracted text (PDF, Word) that Markdown would read as structure: an ATX heading, a code fence,
# or a setext underline (a line of `=` or `-` under prose).
_STRUCTURE_LINE = re.compile(r"^( {0,3})(#{1,6}(?=[ \t]|$)|`{3,}|~{3,}|=+[ \t]*$|-+[ \t]*$)", re.MULTILINE)


def escape_markdown_structure(text: str) -> str:
    """Backslash-escape lines that would turn extracted prose into headings or code blocks."""
    return _STRUCTURE_LINE.sub(r"\1\\\2", text)


def collapse_whitespace(text: str) -> str:
    return _ASCII_WHITESPACE.sub(" ", text).strip()


def atx_heading(level: int, text: str) -> str:
    return f"{'#' * min(level, 6)} {text}"


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------

# Front matter must open on the first line; a blank line right after the opener means the
# `---` is a thematic break, not front matter.
_FRONT_MATTER = re.compile(
    r"\A(?P<fence>---|\+\+\+)[ \t]*\n"
    r"(?P<body>(?![ \t]*\n)(?:[^\n]*\n)*?)"
    r"(?:(?P=fence)|\.\.\.)[ \t]*(?:\n|\Z)"
)
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
# Only lines that can open/close a code fence or be a heading matter when looking for a title.
_TITLE_CANDIDATE_LINE = re.compile(r"^ {0,3}(?:#|`{3,}|~{3,})[^\n]*$", re.MULTILINE)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")

_MAX_METADATA_NODES = 10_000
_MAX_METADATA_DEPTH = 32


def markdown_document(text: str) -> Converted:
    match = _FRONT_MATTER.match(text)
    if match is None:
        return Converted(text, _heading_title(text))
    body = text[match.end() :].lstrip("\n")
    parsed = _parse_front_matter(match["body"], toml=match["fence"] == "+++")
    if parsed is None:  # the fenced block is not a mapping: it was never front matter
        return Converted(text, _heading_title(text))
    title = _front_matter_title(parsed) or _heading_title(body)
    return Converted(body, title, parsed)


def _parse_front_matter(source: str, *, toml: bool) -> dict[str, object] | None:
    """The front matter as JSON-safe metadata; None when it is valid but not a mapping."""
    try:
        value: object = tomllib.loads(source) if toml else yaml.safe_load(source)
        if value is None:
            return {}
        if not isinstance(value, dict):
            return None
        safe = _to_json_safe(value)
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
        return {"front_matter_error": _describe_front_matter_error(exc)}
    assert isinstance(safe, dict)
    return safe


def _describe_front_matter_error(exc: Exception) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        # +2: marks are 0-based and the opening fence is the file's first line.
        return f"{exc.problem} (line {mark.line + 2}, column {mark.column + 1})"
    if isinstance(exc, RecursionError):
        return "front matter is nested too deeply"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _to_json_safe(value: object) -> object:
    """A copy of parsed YAML/TOML that `json.dumps` accepts.

    Bounded, because YAML aliases can make a tiny document expand into a huge (or cyclic) tree.
    """
    remaining = _MAX_METADATA_NODES

    def convert(item: object, depth: int) -> object:
        nonlocal remaining
        remaining -= 1
        if remaining < 0 or depth > _MAX_METADATA_DEPTH:
            raise ValueError("front matter is too large or nested too deeply")
        if isinstance(item, str):
            return _encodable(item)
        if item is None or isinstance(item, bool | int):
            return item
        if isinstance(item, float):
            return item if math.isfinite(item) else str(item)
        if isinstance(item, dt.date | dt.time):  # datetime is a date
            return item.isoformat()
        if isinstance(item, dict):
            return {_encodable(str(key)): convert(val, depth + 1) for key, val in item.items()}
        if isinstance(item, list | tuple):
            return [convert(val, depth + 1) for val in item]
        if isinstance(item, set | frozenset):
            return [convert(val, depth + 1) for val in sorted(item, key=str)]
        return str(item)

    return convert(value, 0)


def _encodable(text: str) -> str:
    """YAML escapes such as "\\ud800" yield lone surrogates, which UTF-8 cannot store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _front_matter_title(metadata: dict[str, object]) -> str | None:
    title = metadata.get("title")
    if isinstance(title, str | int | float) and not isinstance(title, bool):
        return collapse_whitespace(str(title)) or None
    return None


def _heading_title(text: str) -> str | None:
    """The first H1 outside code fences; without one, the first heading of the top level used.

    (Book chapters split into files often start at H2.)
    """
    best: tuple[int, str] | None = None  # (level, text)
    open_fence: str | None = None
    for line_match in _TITLE_CANDIDATE_LINE.finditer(text):
        line = line_match.group()
        fence = _FENCE.match(line)
        if open_fence is not None:
            if fence and _closes_fence(fence, open_fence):
                open_fence = None
            continue
        if fence and _opens_fence(fence):
            open_fence = fence[1]
            continue
        heading = _ATX_HEADING.match(line)
        if heading and (best is None or len(heading[1]) < best[0]):
            best = (len(heading[1]), heading[2].strip())
            if best[0] == 1:
                break
    return best[1] if best else None


def _opens_fence(fence: re.Match[str]) -> bool:
    """CommonMark: a backtick run with more backticks after it on the line is inline code."""
    return fence[1][0] != "`" or "`" not in fence.string[fence.end() :]


def _closes_fence(fence: re.Match[str], open_fence: str) -> bool:
    """CommonMark: same character, at least as long, nothing after it."""
    marker = fence[1]
    rest = fence.string[fence.end() :]
    return marker[0] == open_fence[0] and len(marker) >= len(open_fence) and not rest.strip()


# --------------------------------------------------------------------------------------------
# reStructuredText
# --------------------------------------------------------------------------------------------

# A line made of one repeated punctuation character: docutils' section adornment.
_ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1*[ \t]*")


@dataclass(frozen=True, slots=True)
class _RstTitle:
    text: str
    style: tuple[str, bool]  # (adornment character, has an overline)
    line_count: int


def rst_document(text: str) -> Converted:
    """Section titles become ATX headings; everything else is kept verbatim."""
    lines = text.split("\n")
    output: list[str] = []
    styles: list[tuple[str, bool]] = []  # levels are assigned by first appearance, as docutils
    first_title: str | None = None
    index = 0
    after_blank = True
    while index < len(lines):
        title = _rst_title_at(lines, index) if after_blank else None
        if title is None:
            output.append(escape_heading_markers(lines[index]))
            after_blank = not lines[index].strip()
            index += 1
            continue
        if title.style not in styles:
            styles.append(title.style)
        output.append(atx_heading(styles.index(title.style) + 1, title.text))
        first_title = first_title or title.text
        index += title.line_count
        after_blank = True  # a title may be followed directly by another title or text
    return Converted("\n".join(output), first_title)


def _rst_title_at(lines: list[str], index: int) -> _RstTitle | None:
    return _overlined_title(lines, index) or _underlined_title(lines, index)


def _overlined_title(lines: list[str], index: int) -> _RstTitle | None:
    if index + 2 >= len(lines):
        return None
    overline, text, underline = lines[index], lines[index + 1].strip(), lines[index + 2]
    adornment = _ADORNMENT.fullmatch(overline)
    if adornment is None or not text or underline.rstrip() != overline.rstrip():
        return None
    if _column_width(text) > len(overline.rstrip()):
        return None
    return _RstTitle(text, (adornment[1], True), 3)


def _underlined_title(lines: list[str], index: int) -> _RstTitle | None:
    if index + 1 >= len(lines):
        return None
    text, underline = lines[index].rstrip(), lines[index + 1]
    # An indented line is a block quote or literal block in rst, never a title.
    if not text or text[0].isspace() or _ADORNMENT.fullmatch(text):
        return None
    adornment = _ADORNMENT.fullmatch(underline)
    if adornment is None or _column_width(text) > len(underline.rstrip()):
        return None
    return _RstTitle(text, (adornment[1], False), 2)


def _column_width(text: str) -> int:
    """Display width as docutils measures it: wide East Asian characters count twice."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_DROPPED_TAGS = ["head", "script", "style", "noscript", "template", "svg", "iframe", "object"]
_HEADING_LEVELS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "body", "caption", "center", "dd", "details", "dialog",
        "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header",
        "hgroup", "hr", "html", "main", "nav", "p", "section", "summary", "table", "tbody",
        "td", "tfoot", "th", "thead",
    }
)  # fmt: skip
_LIST_TAGS = frozenset({"ul", "ol", "menu"})
_CELL_TAGS = frozenset({"td", "th"})
# Consecutive blocks of these kinds from the same list or table stay on adjacent lines.
_TIGHT_KINDS = frozenset({"item", "row"})


# The HTML standard's prescan looks for a charset declaration in the first 1024 bytes, and no further.
CHARSET_PRESCAN_BYTES = 1024
_CHARSET_IN_CONTENT = re.compile(r"""charset\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s;"']+))""", re.IGNORECASE)


def declared_charset(data: bytes) -> str | None:
    """The charset label an HTML document declares within its first 1024 bytes, where a browser looks:
    the first `<meta charset>` or `<meta http-equiv="Content-Type" content="...; charset=...">` outside
    comments. Lexbor finds the elements; the bytes are read one character each, as only ASCII matters."""
    head = LexborHTMLParser(data[:CHARSET_PRESCAN_BYTES].decode("latin-1"))
    for meta in head.css("meta"):
        label = meta.attributes.get("charset")
        if not label and (meta.attributes.get("http-equiv") or "").strip().lower() == "content-type":
            found = _CHARSET_IN_CONTENT.search(meta.attributes.get("content") or "")
            label = next((value for value in found.groups() if value), None) if found else None
        if label and label.strip():
            return label.strip()
    return None


def html_document(html: str) -> Converted:
    parser = LexborHTMLParser(html)
    title = _html_title(parser)
    metadata = _html_metadata(parser)
    parser.strip_tags(_DROPPED_TAGS)
    writer = _MarkdownWriter()
    start = strip_navigation(parser)
    if start is not None:
        _walk_tree(start, writer.enter, writer.exit)
    return Converted(writer.finish(), title or writer.first_h1, metadata)


def _html_title(parser: LexborHTMLParser) -> str | None:
    node = parser.css_first("head > title")  # not an <svg> <title> in the body
    title = collapse_whitespace(node.text()) if node is not None else ""
    return title or None


def _html_metadata(parser: LexborHTMLParser) -> dict[str, object]:
    metadata: dict[str, object] = {}
    root = parser.root
    lang = root.attributes.get("lang") if root is not None else None
    if lang:
        metadata["lang"] = lang.strip()
    for meta in parser.css("meta[name]"):
        name, content = meta.attributes.get("name"), meta.attributes.get("content")
        if name and content is not None:
            metadata[name.strip().lower()] = content.strip()
    return metadata


def _walk_tree(
    root: LexborNode,
    enter: Callable[[LexborNode], bool],
    leave: Callable[[LexborNode], None],
) -> None:
    """Depth-first walk below `root` without recursion (documents can nest very deeply).

    `enter` returns whether to descend; `leave` is called only for nodes that were descended.
    """
    node = root.first_child
    depth = 1
    while node is not None:
        descend = enter(node)
        child = node.first_child if descend else None
        if child is not None:
            node, depth = child, depth + 1
            continue
        if descend:
            leave(node)
        while node is not None and node.next is None:
            depth -= 1
            node = node.parent if depth > 0 else None
            if node is not None:
                leave(node)
        node = node.next if node is not None else None


def _inline_text(node: LexborNode) -> str:
    """The text of a node as one line: tags dropped, line breaks and blocks become spaces."""
    parts: list[str] = []

    def enter(child: LexborNode) -> bool:
        if child.is_text_node:
            parts.append(child.text_content or "")
        elif child.tag == "br" or child.tag in _BLOCK_TAGS:
            parts.append(" ")
        return child.is_element_node

    def leave(child: LexborNode) -> None:
        if child.tag in _BLOCK_TAGS:
            parts.append(" ")

    _walk_tree(node, enter, leave)
    return collapse_whitespace("".join(parts))


class _MarkdownWriter:
    """Collects inline text and emits Markdown-like blocks while the tree is walked."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, int, str]] = []  # (kind, group, text)
        self.first_h1: str | None = None
        self._inline: list[str] = []
        self._lists: list[list[int]] = []  # per open list: [next number, or 0 if unordered]
        self._item_marker: str | None = None  # marker waiting for the first text of an <li>
        self._quote_depth = 0
        self._group = 0  # numbers the outermost lists and the tables, to tell them apart

    def enter(self, node: LexborNode) -> bool:
        if node.is_text_node:
            # Source line breaks are just spaces; only <br> breaks a line.
            self._inline.append(_ASCII_WHITESPACE.sub(" ", node.text_content or ""))
            return False
        tag = node.tag or ""
        if not node.is_element_node:
            return False
        if tag == "br":
            self._inline.append("\n")
            return False
        if tag in _HEADING_LEVELS:
            self._heading(node, _HEADING_LEVELS[tag])
            return False
        if tag == "pre":
            self._preformatted(node)
            return False
        if tag == "tr" and not _is_layout_row(node):
            self._table_row(node)
            return False
        if tag in _LIST_TAGS:
            self._flush()
            self._group += not self._lists
            self._lists.append([1 if tag == "ol" else 0])
        elif tag == "li":
            self._flush()
            self._item_marker = self._next_list_marker()
        elif tag == "blockquote":
            self._flush()
            self._quote_depth += 1
        elif tag in _BLOCK_TAGS:
            self._flush()
            self._group += tag == "table"
        return True

    def exit(self, node: LexborNode) -> None:
        tag = node.tag or ""
        if tag in _LIST_TAGS:
            self._flush()
            self._lists.pop()
        elif tag == "li":
            self._flush()
            self._item_marker = None
        elif tag == "blockquote":
            self._flush()
            self._quote_depth -= 1
        elif tag in _BLOCK_TAGS:
            self._flush()

    def finish(self) -> str:
        self._flush()
        pieces: list[str] = []
        previous: tuple[str, int] | None = None
        for kind, group, text in self.blocks:
            if pieces:
                tight = (kind, group) == previous and kind in _TIGHT_KINDS
                pieces.append("\n" if tight else "\n\n")
            pieces.append(text)
            previous = (kind, group)
        return "".join(pieces)

    def _heading(self, node: LexborNode, level: int) -> None:
        self._flush()
        text = _inline_text(node)
        if text:
            self._emit("heading", atx_heading(level, text))
            if level == 1 and self.first_h1 is None:
                self.first_h1 = text

    def _preformatted(self, node: LexborNode) -> None:
        self._flush()
        code = node.text(deep=True).removeprefix("\n").rstrip()
        if not code.strip():
            return
        longest_run = max((len(run) for run in re.findall(r"`+", code)), default=0)
        fence = "`" * max(3, longest_run + 1)
        # Not indented under a list item: a fence indented 4+ spaces stops being a fence.
        self._emit("code", f"{fence}{_code_language(node)}\n{code}\n{fence}")

    def _table_row(self, node: LexborNode) -> None:
        """A row of a Markdown pipe table; a table's first row is its header, under it the delimiter row."""
        self._flush()
        cells = [_inline_text(cell).replace("|", "\\|") for cell in _children(node) if cell.tag in _CELL_TAGS]
        if not any(cells):
            return
        row = "| " + " | ".join(cells) + " |"
        if not self.blocks or self.blocks[-1][:2] != ("row", self._group):
            row += "\n|" + " --- |" * len(cells)
        self._emit("row", row)

    def _next_list_marker(self) -> str:
        if not self._lists:
            return "- "
        counter = self._lists[-1]
        if counter[0] == 0:
            return "- "
        counter[0] += 1
        return f"{counter[0] - 1}. "

    def _flush(self) -> None:
        lines = [collapse_whitespace(line) for line in "".join(self._inline).split("\n")]
        self._inline.clear()
        text = escape_heading_markers(re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n"))
        if not text:
            return
        if self._lists or self._item_marker is not None:
            self._emit("item", self._as_list_item(text))
        else:
            self._emit("paragraph", text)

    def _as_list_item(self, text: str) -> str:
        indent = "  " * max(len(self._lists) - 1, 0)
        marker, self._item_marker = self._item_marker, None
        first_prefix = indent + (marker or "  ")
        continuation = indent + "  "
        lines = text.split("\n")
        return "\n".join([first_prefix + lines[0], *(continuation + line for line in lines[1:])])

    def _emit(self, kind: str, text: str) -> None:
        if self._quote_depth:
            prefix = "> " * self._quote_depth
            lines = text.split("\n")
            text = "\n".join(prefix + line if line else prefix.rstrip() for line in lines)
        self.blocks.append((kind, self._group, text))


# A row whose cells hold these lays out a page (old manuals put the whole page in tables): its cells are
# read as blocks, not squeezed into one table row.
_LAYOUT_CONTENT = "table, h1, h2, h3, h4, h5, h6, p, pre, ul, ol, dl, div, blockquote"


def _is_layout_row(row: LexborNode) -> bool:
    return any(cell.tag in _CELL_TAGS and cell.css_first(_LAYOUT_CONTENT) for cell in _children(row))


def _children(node: LexborNode) -> list[LexborNode]:
    children: list[LexborNode] = []
    child = node.first_child
    while child is not None:
        children.append(child)
        child = child.next
    return children


def _code_language(pre: LexborNode) -> str:
    """The language from `class="language-x"` (or `lang-x`) on <pre> or its <code>."""
    code = pre.css_first("code")
    for node in (pre, code):
        classes = (node.attributes.get("class") or "").split() if node is not None else []
        for name in classes:
            for prefix in ("language-", "lang-"):
                if name.startswith(prefix) and len(name) > len(prefix):
                    return name[len(prefix) :]
    return ""
