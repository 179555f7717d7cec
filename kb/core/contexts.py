"""Chunk contexts (contextual retrieval): the request a generation model answers with a short text that
situates a chunk in its document, embedded and indexed before the chunk.

Anthropic's contextual retrieval sends the whole document with every chunk. kb sends a bounded window
instead: the document's title and outline, and the chunk's neighbours up to `window_tokens` (a setting),
so a chunk of a 200-page manual costs a few thousand input tokens, not 200 pages (docs/search.md measures
both). A context is keyed by the document's sha256 and the chunk's: the window is a function of the
document, so an unchanged chunk of an unchanged document is never sent again, and an edited document is
sent again chunk by chunk (every chunk of it: the context may depend on anything in the document).

Pure: no I/O.
"""

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kb.core.chunking import estimate_tokens

# Part of a context space's spec (its task_type): a new prompt is a new space, never mixed with the old.
PROMPT_VERSION = "CONTEXT_V1"
MAX_OUTPUT_TOKENS = 160  # Anthropic's contexts are 50-100 tokens
DEFAULT_WINDOW_TOKENS = 2000  # KB_CONTEXT_WINDOW_TOKENS
OUTPUT_ESTIMATE = 80  # per chunk, for estimates and budget caps before the service reports usage
_OUTLINE_TOKENS = 300

INSTRUCTION = (
    "Here is the chunk we want to situate within the whole document.\n"
    "Please give a short succinct context to situate this chunk within the overall document for the "
    "purposes of improving search retrieval of the chunk. Answer only with the succinct context and "
    "nothing else."
)


@dataclass(frozen=True, slots=True)
class Section:
    """A chunk as the prompt sees it: its heading path and text."""

    heading_path: str
    text: str
    tokens: int


def context_key(document_sha256: str, text_sha256: str) -> str:
    """What a context is stored and paid under: the document's sha256 and the chunk's."""
    return hashlib.sha256(f"{document_sha256}:{text_sha256}".encode("ascii")).hexdigest()


def prompt(title: str, sections: Sequence[Section], index: int, window_tokens: int) -> str:
    """The request for the context of `sections[index]`: title, outline, the window around it, the chunk."""
    chosen = window(sections, index, window_tokens)
    excerpt = "\n\n".join(sections[n].text for n in chosen)
    return (
        f"Title: {title}\n"
        f"Outline:\n{outline(sections)}\n"
        f"<document>\n{excerpt}\n</document>\n"
        f"{INSTRUCTION}\n"
        f"<chunk>\n{_headed(sections[index])}\n</chunk>"
    )


def window(sections: Sequence[Section], index: int, window_tokens: int) -> list[int]:
    """The chunk and its nearest neighbours (after, then before, one step further each time) while they
    fit in `window_tokens`: a contiguous stretch of the document around the chunk."""
    chosen = [index]
    used = sections[index].tokens
    for n in _nearest_first(index, len(sections)):
        if used + sections[n].tokens > window_tokens:
            break
        chosen.append(n)
        used += sections[n].tokens
    return sorted(chosen)


def _nearest_first(index: int, count: int) -> Iterator[int]:
    for distance in range(1, count):
        for n in (index + distance, index - distance):
            if 0 <= n < count:
                yield n


def outline(sections: Sequence[Section]) -> str:
    """The document's distinct heading paths, in order, cut to a few hundred tokens."""
    lines: list[str] = []
    used = 0
    for heading in dict.fromkeys(s.heading_path for s in sections if s.heading_path):
        used += estimate_tokens(heading) + 1
        if used > _OUTLINE_TOKENS:
            lines.append("…")
            break
        lines.append(f"- {heading}")
    return "\n".join(lines) or "(no headings)"


def prompt_tokens(chunk_tokens: int, document_tokens: int, window_tokens: int) -> int:
    """An estimate of a prompt's input tokens, before it is built (ingest queues with it)."""
    return min(document_tokens, max(window_tokens, chunk_tokens)) + chunk_tokens + _OUTLINE_TOKENS // 2 + 60


def _headed(section: Section) -> str:
    return f"# {section.heading_path}\n\n{section.text}" if section.heading_path else section.text
