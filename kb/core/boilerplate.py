"""Find the content of an HTML page and remove its navigation before it is converted to Markdown.

Generated manuals wrap every page in the same navigation: texinfo's "Next: … Previous: … Up: …" bars,
gtk-doc's and libxml's Prev/Up/Home/Next tables, Doxygen's title area and search box, Sphinx's sidebars and
"¶" anchors, MkDocs' headers and footers. Stored as chunks they outrank the content they point to, so they
are removed here, from the parsed tree, by what they are (an element, a role, a generator's class) or by
what they hold (a short block made only of links and navigation words). A page that marks its content
(`main`, `[role=main]`, Sphinx's `div.body`, Doxygen's `div.contents`, Material's `article`) is read from
there; a page that marks nothing keeps everything but the navigation.
"""

import re

from selectolax.lexbor import LexborHTMLParser, LexborNode

# Where a page says its content is, best first. Doxygen's `div.contents` is taken only from Doxygen pages:
# texinfo uses the same class for its table of contents.
_CONTENT_SELECTORS = ("main", "[role=main]", "article.md-content__inner", "div.document div.body")
_DOXYGEN_CONTENT = "div.contents"

# Elements that are navigation wherever they are.
_NAVIGATION_SELECTORS = (
    "nav, header, aside, footer",
    "[role=navigation], [role=banner], [role=contentinfo], [role=search]",
    # texinfo (makeinfo 4 to 7): the node header bars
    "div.header, div.nav-panel, div.node",
    # gtk-doc, libxml and libxslt: the Prev/Up/Home/Next tables; footers
    "table.navigation, div.footer, address.footer",
    # Doxygen
    "#top, #titlearea, #nav-path, div.navpath, #side-nav, #MSearchBox, #MSearchSelectWindow",
    "#MSearchResultsWindow, div.navigation",
    # Sphinx (and Read the Docs), with the "¶" anchors after every heading
    "div.sphinxsidebar, div.related, a.headerlink, div.rst-footer-buttons, div.wy-breadcrumbs",
    # MkDocs and Material
    ".md-nav, .md-header, .md-footer, .md-sidebar, .md-search, .md-skip",
    # skip links
    "a.skip-link, a.skip-to-content, a.skip, a.skiplink",
)

# Hand-made sites (SQLite's, many projects') name their chrome in class and id words: "menu mainmenu",
# "searchmenu", "tagline". Matched as whole words of the class or id, split at "-" and "_".
_CHROME_WORDS = frozenset(
    {
        "nav",
        "navbar",
        "navigation",
        "menu",
        "mainmenu",
        "submenu",
        "searchmenu",
        "menubar",
        "breadcrumb",
        "breadcrumbs",
        "tagline",
        "masthead",
        "skiplink",
        "searchbox",
        "topbar",
    }
)
_WORD_SPLIT = re.compile(r"[\s_-]+")
# Forms are never a manual's content: a search box, a version picker.
_FORMS = "form, select, button"

# A <header> inside these holds the heading of what it heads: it is content.
_CONTENT_CONTAINERS = frozenset({"article", "section", "main"})
_HEADINGS = "h1, h2, h3, h4, h5, h6"

# Words that navigation bars are made of, besides the links themselves.
_NAVIGATION_WORDS = re.compile(
    r"\b(?:next|previous|prev|up|home|top|contents|table of contents|index|back|forward|go to|"
    r"skip to (?:main )?content|skip navigation|jump to)\b",
    re.IGNORECASE,
)
_NOT_WORDS = re.compile(r"[\W_]+")
_SKIP_LINK = re.compile(r"^\s*(?:skip|jump) to (?:the )?(?:main )?(?:content|navigation)\s*$", re.I)
# A link bar is short; a long block of links is something else (a list, a paragraph of references).
_MAX_BAR_CHARS = 400
# Blocks that can be a navigation bar by what they hold.
_BAR_CANDIDATES = "p, div, table, ul, ol, dl, center"
_HEADING_BAR_LINKS = 3  # libxml's index pages head them with "A-I J-R S-a ...", a heading of links
# A list whose text is at least this share link text is a table of contents (see docs/ingest.md).
LINK_TEXT_SHARE = 0.8


def strip_navigation(parser: LexborHTMLParser) -> LexborNode | None:
    """Removes the page's navigation from `parser`'s tree; returns the node to convert (its content)."""
    _keep_headings_of_content_headers(parser)
    _remove_outermost([node for selector in _NAVIGATION_SELECTORS for node in parser.css(selector)])
    _remove_outermost([*parser.css(_FORMS), *_named_chrome(parser)])
    _remove_outermost([link for link in parser.css("a[href^='#']") if _SKIP_LINK.match(link.text())])
    root = _content_root(parser)
    if root is None:
        return None
    _remove_link_bars(root)
    return root


def _keep_headings_of_content_headers(parser: LexborHTMLParser) -> None:
    """A <header> inside an article or section that holds a heading is unwrapped, so it survives."""
    for header in parser.css("header"):
        inside_content = False
        parent = header.parent
        while parent is not None:
            if parent.tag in _CONTENT_CONTAINERS:
                inside_content = True
                break
            parent = parent.parent
        if inside_content and header.css_first(_HEADINGS) is not None:
            header.unwrap()


def _remove_outermost(nodes: list[LexborNode]) -> None:
    """Removes `nodes`, each once: removing an element frees its descendants, so they are left alone."""
    chosen = {node.mem_id for node in nodes}
    for node in nodes:
        parent = node.parent
        while parent is not None and parent.mem_id not in chosen:
            parent = parent.parent
        if parent is None:
            node.decompose()


def _named_chrome(parser: LexborHTMLParser) -> list[LexborNode]:
    """Elements whose class or id says they are a menu, a tagline, a breadcrumb trail (see _CHROME_WORDS)."""
    found = []
    for node in parser.css("[class], [id]"):
        if node.tag in ("html", "body", "main", "article"):
            continue
        names = f"{node.attributes.get('class') or ''} {node.attributes.get('id') or ''}".lower()
        if _CHROME_WORDS.intersection(_WORD_SPLIT.split(names)):
            found.append(node)
    return found


def _content_root(parser: LexborHTMLParser) -> LexborNode | None:
    selectors = list(_CONTENT_SELECTORS)
    if _generator(parser).startswith("doxygen"):
        selectors.append(_DOXYGEN_CONTENT)
    for selector in selectors:
        node = parser.css_first(selector)
        if node is not None and node.text().strip():
            return node
    return parser.body or parser.root


def _generator(parser: LexborHTMLParser) -> str:
    for meta in parser.css("meta[name]"):
        if (meta.attributes.get("name") or "").lower() == "generator":
            return (meta.attributes.get("content") or "").strip().lower()
    return ""


def _remove_link_bars(root: LexborNode) -> None:
    """Removes short blocks made of nothing but links and navigation words, and link-only lists."""
    _remove_outermost([node for node in root.css(_BAR_CANDIDATES) if is_link_bar(node) or is_link_list(node)])
    _remove_outermost([heading for heading in root.css(_HEADINGS) if _is_heading_of_links(heading)])


def is_link_bar(node: LexborNode) -> bool:
    """A short block of links, images and navigation words only: two links or more, or one beside a
    navigation word ("Up: <a>Top</a>", "[<a>Index</a>]"). A lone link ("<p><a>Download</a></p>") is kept."""
    links = node.css("a[href]")
    if not links or node.css_first("pre, h1, h2, h3, h4, h5, h6") is not None:
        return False
    text = node.text()
    if len(text) > _MAX_BAR_CHARS:
        return False
    if node.tag == "table":
        return len(links) >= 2 and _is_navigation_table(node)
    if _meaningful(_text_outside_links(node)):
        return False
    return len(links) >= 2 or _NAVIGATION_WORDS.search(text) is not None


def _is_navigation_table(table: LexborNode) -> bool:
    """gtk-doc style: a row or two of link or image cells, and at most one cell of plain text (a title)."""
    rows = table.css("tr")
    if not rows or len(rows) > 2:
        return False
    plain_cells = 0
    for cell in table.css("td, th"):
        if _meaningful(_text_outside_links(cell)):
            plain_cells += 1
    return plain_cells <= 1


def _is_heading_of_links(heading: LexborNode) -> bool:
    if len(heading.css("a[href]")) < _HEADING_BAR_LINKS or len(heading.text()) > _MAX_BAR_CHARS:
        return False
    return not _meaningful(_text_outside_links(heading))


def is_link_list(node: LexborNode) -> bool:
    """A list of two or more items whose text is nearly all link text: a table of contents."""
    if node.tag not in {"ul", "ol", "dl"}:
        return False
    if len(node.css("li, dt")) < 2:
        return False
    total = len(_meaningful(node.text()))
    if total == 0:
        return False
    linked = sum(len(_meaningful(link.text())) for link in node.css("a[href]"))
    return linked >= LINK_TEXT_SHARE * total


def _text_outside_links(node: LexborNode) -> str:
    clone = LexborHTMLParser(node.html or "")
    for link in clone.css("a"):
        link.decompose()
    body = clone.body
    return body.text() if body is not None else ""


def _meaningful(text: str) -> str:
    """The letters and digits of `text`, without navigation words."""
    return _NOT_WORDS.sub("", _NAVIGATION_WORDS.sub(" ", text))
