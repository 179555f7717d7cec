"""Navigation is removed from HTML before it becomes Markdown; content, headings and data tables stay.

The fixtures in tests/data/html are hand-written after each generator's real markup.
"""

from pathlib import Path

import pytest

from kb.core.formats import html_document

HTML = Path(__file__).parent.parent / "data" / "html"


def converted(name: str) -> str:
    return html_document((HTML / name).read_text(encoding="utf-8")).text


@pytest.mark.parametrize(
    ("fixture", "kept", "removed"),
    [
        (
            "texinfo.html",
            ["### 2.5 Closure Example", "binding fputs with stdout", "#include <ffi.h>"],
            ["Next:", "Previous:", "Up:", "Contents", "Index", "Closure Basics", "Next Node"],
        ),
        (
            "gtkdoc.html",
            ["## templates", "| Function | Returns |\n| --- | --- |", "| xsltEvalTemplateString |"],
            ["libxslt Reference Manual", "Top", "Description", "| |", "GTK-Doc"],
        ),
        (
            "doxygen.html",
            ["Represents a JSON value.", "discriminated union", "## Member Function Documentation"],
            ["Main Page", "Classes", "Search", "Json Value", "Public Types", "Generated on"],
        ),
        (
            "sphinx.html",
            ["# First Steps with Celery\n", "## Choosing a Broker\n", "batteries included"],
            ["¶", "Navigation", "index", "next", "Quick search", "Table of Contents", "Copyright"],
        ),
        (
            "mkdocs.html",
            ["# Configuration\n", "YAML configuration file"],
            ["Skip to content", "User Guide", "Previous", "Deploying", "Made with Material", "¶"],
        ),
        (
            "plain.html",
            [
                "# Release notes",  # the article's own <header> keeps its heading
                "Published on 3 March",
                "streaming reader",
                "Download version 2.0",  # a lone link is content
                "| Python 3.8 | dropped |",  # a table of data, links in its first row or not
            ],
            ["Example Project", "Skip to content", "Home / Docs", "Related", "Copyright", "Privacy"],
        ),
        (
            "handmade.html",  # SQLite's site: chrome named only by its classes, and a search form
            ["SQLite Autoincrement", "# 1. Summary", "usually not needed", "INTEGER PRIMARY KEY"],
            ["Small. Fast.", "Choose any three", "Home", "Documentation", "Search Changelog", "Go"],
        ),
    ],
)
def test_navigation_is_removed_and_content_kept(fixture: str, kept: list[str], removed: list[str]) -> None:
    text = converted(fixture)
    for wanted in kept:
        assert wanted in text
    for unwanted in removed:
        assert unwanted not in text


def test_a_page_without_a_content_marker_keeps_all_its_text_but_navigation() -> None:
    page = "<body><div><p>Intro text.</p></div><ul><li>apple</li><li>pear</li></ul><p>Up: the hill</p></body>"
    assert html_document(page).text == "Intro text.\n\n- apple\n- pear\n\nUp: the hill"


def test_a_table_of_contents_list_is_removed_but_a_list_with_prose_is_kept() -> None:
    page = (
        '<ul><li><a href="a.html">Alpha</a></li><li><a href="b.html">Beta</a></li></ul>'
        '<ul><li><a href="c.html">Gamma</a>: how gamma rays are measured</li>'
        '<li><a href="d.html">Delta</a>: river mouths and their sediments</li></ul>'
    )
    text = html_document(page).text
    assert "Alpha" not in text and "Beta" not in text
    assert "- Gamma: how gamma rays are measured\n- Delta: river mouths" in text


def test_layout_tables_are_read_as_blocks_not_as_one_row() -> None:
    page = (
        "<table><tr><td><h1>Manual</h1></td></tr><tr><td><p>First paragraph.</p>"
        "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table></td></tr></table>"
    )
    assert html_document(page).text == "# Manual\n\nFirst paragraph.\n\n| a | b |\n| --- | --- |\n| 1 | 2 |"


def test_a_heading_made_of_links_is_navigation() -> None:
    page = (
        '<h2><a href="APIchunk0.html">A-I</a> <a href="APIchunk1.html">J-R</a> '
        '<a href="APIchunk2.html">S-a</a></h2>'
        "<h2>Letter A:</h2><p>xsltApplyImports applies the imports.</p>"
    )
    assert html_document(page).text == "## Letter A:\n\nxsltApplyImports applies the imports."
