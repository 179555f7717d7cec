import re
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kb.core.chunking import (
    ChunkingOptions,
    TextChunk,
    chunk_document,
    chunk_markdown,
    chunk_plain,
    estimate_tokens,
)
from tests.support.files import HANDBOOK

PROSE = (
    "FastAPI is a modern web framework for building APIs with Python based on standard "
    "type hints. It is fast to code, and it has fewer bugs because editors can help. "
)

# Lines that may be outside every chunk: headings (whose sections can be empty) and setext
# paragraphs. Deliberately loose, so that it does not re-implement the chunker's parser.
_ATX_LIKE = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")
_UNDERLINE_LIKE = re.compile(r" {0,3}(?:=+|-+)[ \t]*$")


NO_MERGING = ChunkingOptions(min_tokens=0)  # for tests of structure made of tiny sections


def _heading_like_lines(lines: list[str]) -> set[int]:
    result = set()
    for index, line in enumerate(lines):
        if _ATX_LIKE.match(line) or _UNDERLINE_LIKE.match(line):
            result.add(index)
        elif line.strip():
            below = index + 1
            while below < len(lines) and lines[below].strip():
                if _UNDERLINE_LIKE.match(lines[below]):
                    result.add(index)
                    break
                below += 1
    return result


def _uncovered_lines(doc: str, chunks: list[TextChunk]) -> set[int]:
    """Indexes of lines holding a non-whitespace character that no chunk covers."""
    covered = bytearray(len(doc))
    for chunk in chunks:
        covered[chunk.start : chunk.end] = b"\x01" * (chunk.end - chunk.start)
    uncovered = set()
    line = 0
    for offset, char in enumerate(doc):
        if char == "\n":
            line += 1
        elif not covered[offset] and not char.isspace():
            uncovered.add(line)
    return uncovered


_DELIMITER_ROW = re.compile(r"\|?(?:[ \t]*:?-+:?[ \t]*\|)+[ \t]*(?::?-+:?[ \t]*)?")


def _table_header(prefix: str) -> bool:
    """A split table's later pieces start with its header row and delimiter row."""
    lines = prefix.split("\n")
    return len(lines) == 3 and "|" in lines[0] and bool(_DELIMITER_ROW.fullmatch(lines[1])) and not lines[2]


def assert_valid(
    doc: str, chunks: list[TextChunk], options: ChunkingOptions, left_out: frozenset[int] = frozenset()
) -> None:
    """`left_out`: line numbers that may lie in no chunk (navigation) besides heading lines."""
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        piece = doc[chunk.start : chunk.end]
        assert chunk.text == piece or (
            chunk.text.endswith(piece) and _table_header(chunk.text[: -len(piece)])
        )
        assert chunk.text and chunk.text == chunk.text.strip()
        assert chunk.token_estimate == estimate_tokens(chunk.text) <= options.max_tokens
    for previous, chunk in pairwise(chunks):
        assert previous.start < chunk.start
        assert previous.end < chunk.end
        if options.overlap_tokens == 0:
            assert previous.end <= chunk.start
    uncovered = _uncovered_lines(doc, chunks)
    assert uncovered <= _heading_like_lines(doc.split("\n")) | left_out, "text lost"


def _without_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


def texts(chunks: list[TextChunk]) -> list[str]:
    return [chunk.text for chunk in chunks]


def paths(chunks: list[TextChunk]) -> list[tuple[str, ...]]:
    return [chunk.heading_path for chunk in chunks]


# --------------------------------------------------------------------------------------------
# estimate_tokens
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("", 0, 0),
        ("hello world", 1, 4),
        ((PROSE * 30)[:4000], 950, 1100),  # English: about 4 characters per token
        ("数据库连接池配置" * 500, 4000, 4600),  # CJK: at least one token per character
        ("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3" * 100, 4000 // 3, 4000 // 2),  # base64
        ("😀" * 100, 100, 200),
        ("https://example.com/a/very/long/path?with=query&and=more " * 10, 170, 300),
    ],
)
def test_estimate_tokens_is_in_a_conservative_range(text: str, low: int, high: int) -> None:
    assert low <= estimate_tokens(text) <= high


def test_estimate_tokens_counts_long_runs_higher_than_words() -> None:
    words = "abcd " * 400
    run = "abcd" * 500
    assert estimate_tokens(run) > estimate_tokens(words)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_estimate_tokens_grows_with_text_and_is_bounded(text: str, more: str) -> None:
    tokens = estimate_tokens(text)
    assert estimate_tokens(text + more) >= tokens
    assert len(text) / 4 <= tokens <= len(text)


# --------------------------------------------------------------------------------------------
# Options and dispatch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"target_tokens": 0}, {"max_tokens": 0}, {"overlap_tokens": -1}],
)
def test_options_reject_nonsense(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ChunkingOptions(**kwargs)


def test_target_above_max_acts_as_max() -> None:
    doc = "\n\n".join([PROSE] * 40)
    options = ChunkingOptions(target_tokens=5000, max_tokens=100)
    chunks = chunk_plain(doc, options)
    assert len(chunks) > 1
    assert_valid(doc, chunks, options)


@pytest.mark.parametrize("doc", ["", " ", "\n\n\n", " \t\n  \n\u3000\n"])
@pytest.mark.parametrize("fmt", ["markdown", "text", "rst", "html"])
def test_empty_and_whitespace_only_input_gives_no_chunks(doc: str, fmt: str) -> None:
    assert chunk_document(doc, fmt) == []


def test_chunk_document_dispatches_on_format() -> None:
    doc = "# Title\n\nBody text.\n"
    assert chunk_document(doc, "markdown") == chunk_markdown(doc)
    assert chunk_document(doc, "rst") == chunk_markdown(doc)
    assert chunk_document(doc, "html") == chunk_markdown(doc)
    assert chunk_document(doc, "text") == chunk_plain(doc)
    assert chunk_plain(doc)[0].heading_path == ()
    with pytest.raises(ValueError, match="pdf"):
        chunk_document(doc, "pdf")


# --------------------------------------------------------------------------------------------
# Markdown structure
# --------------------------------------------------------------------------------------------


def test_heading_paths_nest_and_pop() -> None:
    doc = (
        f"Intro before any heading. {PROSE}\n\n"
        f"# Tutorial\n\nTutorial text. {PROSE}\n\n"
        f"## Security\n\nSecurity text. {PROSE}\n\n"
        f"### OAuth2 scopes ###\n\nScopes text. {PROSE}\n\n"
        f"#### Deep\n\nDeep text. {PROSE}\n\n"
        f"## Testing\n\nTesting text. {PROSE}\n\n"
        f"# Reference\n\nReference text. {PROSE}\n"
    )
    chunks = chunk_markdown(doc)
    assert paths(chunks) == [
        (),
        ("Tutorial",),
        ("Tutorial", "Security"),
        ("Tutorial", "Security", "OAuth2 scopes"),
        ("Tutorial", "Security", "OAuth2 scopes", "Deep"),
        ("Tutorial", "Testing"),
        ("Reference",),
    ]
    assert texts(chunks)[:2] == [
        f"Intro before any heading. {PROSE}".strip(),
        f"# Tutorial\n\nTutorial text. {PROSE}".strip(),
    ]
    assert_valid(doc, chunks, ChunkingOptions())


@pytest.mark.parametrize(
    ("line", "title"),
    [
        ("## Foo ##", "Foo"),
        ("##   Foo   #####   ", "Foo"),
        ("## C#", "C#"),
        ("  ## Indented", "Indented"),
        ("##\tTab", "Tab"),
    ],
)
def test_atx_heading_titles(line: str, title: str) -> None:
    chunks = chunk_markdown(f"{line}\n\nBody.\n")
    assert paths(chunks) == [(title,)]


@pytest.mark.parametrize(
    "line",
    ["#NoSpace", "####### Seven", "    # Indented code", r"\# Escaped"],
)
def test_lines_that_are_not_headings(line: str) -> None:
    chunks = chunk_markdown(f"Before.\n\n{line}\n\nAfter.\n")
    assert paths(chunks) == [()]


@pytest.mark.parametrize(
    "fence",
    [
        "```python\n# not a heading\n\n## nor this\n```",
        "~~~\n# not a heading\n~~~",
        "````\n```\n# still code\n```\n# still code\n````",
        "```\n# code\n~~~\n# code\n``````",
        "  ```\n# code\n   ```",
    ],
)
def test_hash_inside_fenced_code_is_not_a_heading(fence: str) -> None:
    doc = f"# Real\n\nText.\n\n{fence}\n\nAfter the fence.\n"
    chunks = chunk_markdown(doc)
    assert paths(chunks) == [("Real",)]
    assert chunks[0].text.endswith("After the fence.")


def test_unclosed_fence_runs_to_the_end() -> None:
    doc = "# Real\n\n```\n# code\n\n## code\n"
    chunks = chunk_markdown(doc)
    assert paths(chunks) == [("Real",)]
    assert chunks[0].text == doc.strip()


def test_inline_triple_backticks_do_not_open_a_fence() -> None:
    doc = "```inline``` code.\n\n# Heading\n\nText.\n"
    assert paths(chunk_markdown(doc, NO_MERGING)) == [(), ("Heading",)]


def test_setext_headings() -> None:
    doc = (
        "Title\n=====\n\nIntro.\n\n"
        "Part one\n--------\n\nFirst.\n\n"
        "---\n\nAfter a break.\n\n"
        "- a list item\n---\n\nMore.\n\n"
        "Part\ntwo\n---\n\nSecond.\n"
    )
    chunks = chunk_markdown(doc, NO_MERGING)
    assert paths(chunks) == [("Title",), ("Title", "Part one"), ("Title", "Part two")]
    assert texts(chunks) == [
        "Title\n=====\n\nIntro.",
        "Part one\n--------\n\nFirst.\n\n---\n\nAfter a break.\n\n- a list item\n---\n\nMore.",
        "Part\ntwo\n---\n\nSecond.",
    ]


def test_setext_underline_inside_fence_is_code() -> None:
    doc = "# A\n\n```\ntext\n---\n```\n"
    assert paths(chunk_markdown(doc)) == [("A",)]


def test_heading_only_sections_make_no_chunk_but_stay_in_paths() -> None:
    doc = "# Guide\n## Empty\n\n\n### Child\n\nChild text.\n\n## Also empty\n## Last\n"
    chunks = chunk_markdown(doc)
    assert paths(chunks) == [("Guide", "Empty", "Child")]
    assert texts(chunks) == ["### Child\n\nChild text."]
    assert_valid(doc, chunks, ChunkingOptions())


def test_real_document_keeps_invariants() -> None:
    doc = (HANDBOOK / "async.md").read_text(encoding="utf-8")
    nested = ("Concurrency and `async def`", "Choosing between them", "The one mistake to avoid")
    for options in (ChunkingOptions(), ChunkingOptions(target_tokens=64, max_tokens=128)):
        chunks = chunk_markdown(doc, options)
        assert_valid(doc, chunks, options)
        assert nested in paths(chunks)


# --------------------------------------------------------------------------------------------
# Packing and splitting
# --------------------------------------------------------------------------------------------


def test_small_blocks_are_packed_up_to_the_target() -> None:
    paragraphs = [f"Paragraph {i}. " + PROSE for i in range(30)]
    doc = "\n\n".join(paragraphs)
    options = ChunkingOptions(target_tokens=200, max_tokens=400)
    chunks = chunk_plain(doc, options)
    assert_valid(doc, chunks, options)
    assert all(chunk.token_estimate <= 200 for chunk in chunks)
    assert all(chunk.token_estimate > 100 for chunk in chunks[:-1])  # greedy: nearly full
    for chunk in chunks:  # whole paragraphs only
        assert chunk.text.startswith("Paragraph") and chunk.text.endswith("help.")


def test_block_between_target_and_max_stays_whole() -> None:
    big = " ".join([PROSE] * 5)  # about 210 tokens, one paragraph
    small = "A small paragraph that is long enough to count as a block of its own."
    doc = f"{small}\n\n{big}\n\n{small}"
    chunks = chunk_plain(doc, ChunkingOptions(target_tokens=100, max_tokens=300))
    assert texts(chunks) == [small, big.strip(), small]


def test_oversized_paragraph_is_split_at_sentences() -> None:
    doc = " ".join(f"Sentence number {i} talks about path parameters." for i in range(200))
    options = ChunkingOptions(target_tokens=60, max_tokens=120)
    chunks = chunk_plain(doc, options)
    assert len(chunks) > 5
    assert all(chunk.text.endswith("parameters.") for chunk in chunks)
    assert_valid(doc, chunks, options)


def test_oversized_list_is_split_between_items() -> None:
    doc = "\n".join(f"* Item {i}. Fix something. Refactor another thing." for i in range(300))
    options = ChunkingOptions(target_tokens=60, max_tokens=120)
    chunks = chunk_markdown(doc, options)
    assert all(chunk.text.startswith("* Item") for chunk in chunks)
    assert all(chunk.text.endswith("thing.") for chunk in chunks)
    assert_valid(doc, chunks, options)


def test_oversized_code_block_is_split_at_lines() -> None:
    code = "\n".join(f"    value_{i} = compute(value_{i - 1}, {i})" for i in range(400))
    doc = f"# Code\n\n```python\n{code}\n```\n"
    options = ChunkingOptions(target_tokens=100, max_tokens=200)
    chunks = chunk_markdown(doc, options)
    assert len(chunks) > 5
    assert all(re.search(r"\d\)$|```$", chunk.text) for chunk in chunks)
    assert_valid(doc, chunks, options)


def test_long_line_without_spaces_is_cut_under_the_ceiling() -> None:
    line = ("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3" * 5000)[:200_000]
    doc = f"# Data\n\nBefore.\n\n{line}\n\nAfter.\n"
    options = ChunkingOptions()
    chunks = chunk_markdown(doc, options)
    assert_valid(doc, chunks, options)
    assert 150 <= len(chunks) <= 200  # about target-sized, not tiny
    assert _without_space("".join(texts(chunks))) == _without_space(doc)


def test_cjk_text_without_spaces_is_cut_under_the_ceiling() -> None:
    doc = "数据库连接池配置。" * 20_000 + "\n" + "無" * 30_000
    options = ChunkingOptions()
    chunks = chunk_plain(doc, options)
    assert_valid(doc, chunks, options)
    assert all(chunk.token_estimate <= options.target_tokens for chunk in chunks[:-1])
    assert sum(chunk.text.endswith("。") for chunk in chunks) > len(chunks) / 2


def test_cuts_after_cjk_full_stops_between_ascii_runs_keep_exact_estimates() -> None:
    doc = ("abcdefghijklmnop" + "。") * 300  # no whitespace: cuts fall after the full stops
    options = ChunkingOptions(target_tokens=20, max_tokens=40)
    chunks = chunk_plain(doc, options)
    assert all(chunk.text.endswith("。") for chunk in chunks)
    assert_valid(doc, chunks, options)


def test_tiny_last_chunk_is_merged_into_the_previous_one() -> None:
    doc = "\n\n".join([PROSE.strip()] * 4 + ["Tail."])  # two paragraphs make 81 tokens
    options = ChunkingOptions(target_tokens=82, max_tokens=400)
    chunks = chunk_plain(doc, options)
    assert len(chunks) == 2
    assert chunks[-1].text.endswith("help.\n\nTail.")
    assert 82 < chunks[-1].token_estimate <= 82 * 1.25


def test_overlap_repeats_the_end_of_the_previous_chunk() -> None:
    doc = "# One\n\n" + "\n\n".join([PROSE] * 12) + "\n\n# Two\n\n" + PROSE
    options = ChunkingOptions(target_tokens=100, max_tokens=150, overlap_tokens=20)
    chunks = chunk_markdown(doc, options)
    assert_valid(doc, chunks, options)
    first_section = [chunk for chunk in chunks if chunk.heading_path == ("One",)]
    for previous, chunk in pairwise(first_section):
        assert chunk.start < previous.end  # overlaps
        assert doc[chunk.start - 1].isspace()  # starts at a word
        assert 5 <= estimate_tokens(doc[chunk.start : previous.end]) <= 20
    second = next(chunk for chunk in chunks if chunk.heading_path == ("Two",))
    assert second.text.startswith("# Two")  # no overlap across sections


def test_editing_a_paragraph_changes_only_its_sections_chunks() -> None:
    paragraphs = [[f"P{i}.{j} {PROSE}" for j in range(6)] for i in range(5)]
    sections = [f"## Part {i}\n\n" + "\n\n".join(body) for i, body in enumerate(paragraphs)]
    before = "# Doc\n\n" + "\n\n".join(sections)
    after = before.replace("P2.3 FastAPI is a modern", "P2.3 FastAPI is a rather new and modern")
    assert after != before
    options = ChunkingOptions(target_tokens=80, max_tokens=160)
    old, new = chunk_markdown(before, options), chunk_markdown(after, options)
    changed = set(texts(old)) ^ set(texts(new))
    assert changed
    section_of = {chunk.text: chunk.heading_path for chunk in old + new}
    assert {section_of[text] for text in changed} == {("Doc", "Part 2")}


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

_WORDS = st.lists(
    st.sampled_from(["alpha", "beta.", "gamma!", "δέλτα", "数据", "🙂", "x", "end.\u3000", "#"]),
    min_size=1,
    max_size=30,
).map(" ".join)
_LINE = st.one_of(
    st.sampled_from(
        ["", "", "", "  ", "```", "```py", "~~~", "````", "---", "===", "***", "- item", "1. step"]
    ),
    st.builds(lambda level, title: "#" * level + " " + title, st.integers(1, 7), _WORDS),
    _WORDS,
    _WORDS.map(lambda words: "    " + words),
    st.text(alphabet="abcXYZ019+/=-_.", min_size=15, max_size=2500),  # long unbroken runs
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=60),
)
_MARKDOWNISH = st.lists(_LINE, max_size=50).map("\n".join)
# Character soup from the characters that matter to the parser and the splitter.
_SOUP = st.lists(
    st.sampled_from([*"#`~-=  \n\n\naé。.!\t*>1", "```", "~~~", "## ", "x" * 25, "数"]),
    max_size=300,
).map("".join)
_OPTIONS = st.builds(
    ChunkingOptions,
    target_tokens=st.integers(1, 300),
    max_tokens=st.integers(1, 600),
    overlap_tokens=st.sampled_from([0, 0, 3, 30]),
)


@settings(max_examples=250, deadline=None)
@given(st.one_of(_MARKDOWNISH, _SOUP), _OPTIONS)
def test_markdown_chunks_keep_all_invariants(doc: str, options: ChunkingOptions) -> None:
    chunks = chunk_markdown(doc, options)
    assert_valid(doc, chunks, options)
    assert chunk_markdown(doc, options) == chunks  # deterministic


@settings(max_examples=150, deadline=None)
@given(st.one_of(_MARKDOWNISH, _SOUP, st.text()), _OPTIONS)
def test_plain_chunks_keep_all_invariants(doc: str, options: ChunkingOptions) -> None:
    chunks = chunk_plain(doc, options)
    assert_valid(doc, chunks, options)
    assert not _uncovered_lines(doc, chunks)  # no headings: nothing may be left out
    assert all(chunk.heading_path == () for chunk in chunks)
    assert chunk_plain(doc, options) == chunks


_PARAGRAPH_WORDS = [*PROSE.split(), "数据库。", "a" * 40]
_PARAGRAPH = st.lists(st.sampled_from(_PARAGRAPH_WORDS), min_size=1, max_size=120).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(_PARAGRAPH, min_size=1, max_size=6), min_size=2, max_size=5),
    st.data(),
)
def test_an_edit_only_touches_its_own_section(
    sections: list[list[str]],
    data: st.DataObject,
) -> None:
    def render(body: list[list[str]]) -> str:
        return "\n\n".join(
            f"## Section {i}\n\n" + "\n\n".join(paragraphs) for i, paragraphs in enumerate(body)
        )

    edited = data.draw(st.integers(0, len(sections) - 1))
    paragraph = data.draw(st.integers(0, len(sections[edited]) - 1))
    replacement = data.draw(_PARAGRAPH)
    new_sections = [list(paragraphs) for paragraphs in sections]
    new_sections[edited][paragraph] = replacement
    options = ChunkingOptions(target_tokens=40, max_tokens=80, min_tokens=0)  # tiny ones join neighbours
    old, new = (
        chunk_markdown(render(sections), options),
        chunk_markdown(render(new_sections), options),
    )
    section_of: dict[str, set[tuple[str, ...]]] = {}
    for chunk in old + new:
        section_of.setdefault(chunk.text, set()).add(chunk.heading_path)
    for text in set(texts(old)) ^ set(texts(new)):
        assert section_of[text] == {(f"Section {edited}",)}


# --------------------------------------------------------------------------------------------
# Navigation, tiny chunks, tables
# --------------------------------------------------------------------------------------------


def _lines_of(doc: str, needle: str) -> frozenset[int]:
    return frozenset(index for index, line in enumerate(doc.split("\n")) if needle in line)


def test_a_navigation_bar_is_never_a_chunk() -> None:
    bar = "Previous: [Closure Example](closure.md), Up: [Using libffi](using.md) [[Index](index.md)]"
    doc = f"{bar}\n\n# Thread Safety\n\n{PROSE}\n\n[Next](next.md) | [Up](using.md)\n"
    chunks = chunk_markdown(doc)
    assert texts(chunks) == [f"# Thread Safety\n\n{PROSE.strip()}"]
    assert_valid(doc, chunks, ChunkingOptions(), _lines_of(doc, "(using.md)"))


def test_a_table_of_contents_is_not_stored_but_a_list_with_prose_is() -> None:
    toc = "- [Install](#install)\n- [Use](#use)\n  - [Flags](#flags)"
    see_also = "- [Gamma](g.md): how gamma rays are measured\n- [Delta](d.md): rivers and their mouths"
    doc = f"# Guide\n\n## Contents\n\n{toc}\n\n## Install\n\n{PROSE}\n\n{see_also}\n"
    chunks = chunk_markdown(doc)
    assert paths(chunks) == [("Guide", "Install")]
    assert "[Install](#install)" not in chunks[0].text and see_also in chunks[0].text
    assert_valid(doc, chunks, ChunkingOptions(), _lines_of(doc, "](#"))


def test_a_link_only_paragraph_inside_prose_is_kept() -> None:
    doc = f"# Download\n\n{PROSE}\n\n[Download version 2.0](https://example.com/2.0)\n"
    assert texts(chunk_markdown(doc)) == [doc.strip()]


def test_a_tiny_section_joins_the_next_one_under_the_same_parent() -> None:
    doc = f"# API\n\n## open\n\nOpens a file.\n\n## close\n\n{PROSE}\n\n# Other\n\n{PROSE}\n"
    chunks = chunk_markdown(doc)
    assert texts(chunks)[0] == f"## open\n\nOpens a file.\n\n## close\n\n{PROSE.strip()}"
    assert paths(chunks) == [("API",), ("Other",)]  # what both joined sections' paths share
    assert_valid(doc, chunks, ChunkingOptions())


def test_a_tiny_last_section_joins_the_previous_one_but_never_leaves_its_parent() -> None:
    doc = f"# A\n\n{PROSE}\n\n## a1\n\nShort.\n\n# B\n\n## b1\n\nAlone.\n"
    chunks = chunk_markdown(doc, ChunkingOptions(max_tokens=60, target_tokens=60))
    assert texts(chunks) == [f"# A\n\n{PROSE}\n\n## a1\n\nShort.", "## b1\n\nAlone."]
    assert paths(chunks) == [("A",), ("B", "b1")]  # b1 is under B, not A: it stays, tiny


def test_a_big_table_is_split_by_rows_under_its_repeated_header() -> None:
    header = "| Option | Meaning |\n| --- | --- |"
    rows = [f"| `opt{i}` | sets option {i} to a value that matters |" for i in range(120)]
    doc = f"# Options\n\nThe options are:\n\n{header}\n" + "\n".join(rows) + f"\n\n{PROSE}\n"
    options = ChunkingOptions(target_tokens=100, max_tokens=200)
    chunks = chunk_markdown(doc, options)
    assert_valid(doc, chunks, options)
    table_chunks = [chunk for chunk in chunks if "`opt" in chunk.text]
    assert len(table_chunks) > 5
    for chunk in table_chunks[1:]:
        assert chunk.text.startswith(header + "\n| `opt")
        assert chunk.text == header + "\n" + doc[chunk.start : chunk.end]  # start, end: the rows
    found = [line for chunk in table_chunks for line in chunk.text.split("\n") if "`opt" in line]
    assert found == rows  # every row once, in order


def test_a_table_that_fits_stays_in_one_chunk() -> None:
    table = "| Name | Qty |\n| --- | --- |\n" + "\n".join(f"| pear number {i} | {i} |" for i in range(25))
    doc = f"# Stock\n\n{PROSE * 2}\n\n{table}\n\n{PROSE * 2}\n"
    options = ChunkingOptions(target_tokens=150, max_tokens=400)
    chunks = chunk_markdown(doc, options)
    assert table in texts(chunks)
    assert_valid(doc, chunks, options)
