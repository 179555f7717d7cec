"""The emulator's text "model": deterministic text derived from the prompt, so tests can check mechanics.

A prompt with a line starting `Title:` gets "Context: <that title>", then the Markdown headings (lines
starting with `#`) of the text between `<chunk>` and `</chunk>`, one per line; any other prompt gets its
first 12 words. Output is cut to `maxOutputTokens` (finishReason MAX_TOKENS). Tokens are counted by
`tokens.count_tokens`, like everything else the emulator bills.
"""

import re
from dataclasses import dataclass

from .tokens import count_tokens, truncate_to_tokens

FIRST_WORDS = 12
_CHUNK = re.compile(r"<chunk>(.*?)</chunk>", re.DOTALL)

STOP = "STOP"
MAX_TOKENS = "MAX_TOKENS"
SAFETY = "SAFETY"


@dataclass(frozen=True)
class Generation:
    """What the model answered for one request. `blocked` is a prompt refused outright (promptFeedback
    .blockReason, no candidates); a SAFETY finish has a candidate without content."""

    text: str
    finish_reason: str
    prompt_tokens: int
    output_tokens: int
    blocked: str | None = None


def generated_text(prompt: str) -> str:
    """The text the emulator's model writes for `prompt` (before any output limit)."""
    title = next(
        (
            line.strip()[len("Title:") :].strip()
            for line in prompt.splitlines()
            if line.strip().startswith("Title:")
        ),
        None,
    )
    if title is None:
        return " ".join(prompt.split()[:FIRST_WORDS])
    chunk = _CHUNK.search(prompt)
    body = chunk.group(1) if chunk else ""
    headings = [line.strip() for line in body.splitlines() if line.lstrip().startswith("#")]
    return "\n".join([f"Context: {title}", *headings])


def generate(
    prompt_text: str,
    prompt: str,
    max_output_tokens: int | None,
    *,
    blocked: bool = False,
    safety: bool = False,
) -> Generation:
    """The answer to one request: `prompt_text` is what is billed as input (system instruction included),
    `prompt` what the model reads."""
    prompt_tokens = count_tokens(prompt_text)
    if blocked:
        return Generation("", SAFETY, prompt_tokens, 0, blocked=SAFETY)
    if safety:
        return Generation("", SAFETY, prompt_tokens, 0)
    text, finish = generated_text(prompt), STOP
    if max_output_tokens is not None and count_tokens(text) > max_output_tokens:
        text, finish = truncate_to_tokens(text, max_output_tokens), MAX_TOKENS
    return Generation(text, finish, prompt_tokens, count_tokens(text))
