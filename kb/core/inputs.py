"""What is embedded for a chunk: its text, headed by where it sits in its document.

A chunk's vector otherwise knows nothing of its place: a section "fs.mkdtemp(prefix)" under "File system"
would be embedded without "file system". A headed input puts one context line before the text, the
document title and the heading path ("Node.js fs > File system > fs.mkdtemp(prefix)"), the title left
out when the path already starts with it. The same text under two headings is then two inputs, embedded
(and paid for) once each.

Pure: no I/O.
"""

import re
from collections.abc import Sequence

from kb.records import ChunkInput

SEPARATOR = " > "
_SPACE = re.compile(r"\s+")


def _plain(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def context_line(title: str, heading_path: Sequence[str]) -> str:
    """ "Title > Heading > Subheading": where a chunk sits; empty when nothing is known of it."""
    parts = [_plain(heading) for heading in heading_path if _plain(heading)]
    title = _plain(title)
    if title and not (parts and parts[0].casefold() == title.casefold()):
        parts.insert(0, title)
    return SEPARATOR.join(parts)


def embedding_input(chunk_input: ChunkInput | str, context: str, text: str, situation: str = "") -> str:
    """The text a space of `chunk_input` embeds for a chunk: its context line, a blank line, its text; in a
    `situated` space, after the context a generation model wrote for it (kb.core.contexts)."""
    if chunk_input == ChunkInput.SITUATED and situation:
        return f"{situation}\n\n{embedding_input(ChunkInput.HEADED, context, text)}"
    if chunk_input == ChunkInput.TEXT or not context:
        return text
    return f"{context}\n\n{text}"
