"""Hit text as HTML for the search page: Markdown rendered by markdown-it-py with raw HTML off, so markup in a
document shows as text; links it accepts (its validateLink refuses javascript:, vbscript:, file: and data:
other than images) open in a new tab without a referrer; headings demoted below the page's own."""

from functools import cache

from markdown_it import MarkdownIt

HEADING_SHIFT = 3  # a document's "#" becomes <h4>: a result card holds no heading as big as the page's


@cache
def _renderer() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])


def to_html(text: str) -> str:
    """Safe HTML for a hit's Markdown text: no tag, attribute or script from the document survives."""
    renderer = _renderer()
    tokens = renderer.parse(text)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1]) + HEADING_SHIFT)}"
        for child in token.children or ():
            if child.type == "link_open":
                child.attrSet("rel", "noopener noreferrer")
                child.attrSet("target", "_blank")
            if child.type == "image":  # the page loads nothing from elsewhere: an image is its alt text
                child.type, child.tag, child.content = "text", "", child.content
    return str(renderer.renderer.render(tokens, renderer.options, {}))
