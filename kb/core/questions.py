"""What a question may be: one text for the embedding model, so not empty and not longer than it reads."""

from kb.errors import InputError

# gemini-embedding-001 reads 2,048 tokens, about 8,000 characters of English, and would cut the rest. Longer
# is a mistake (a pasted file), refused, not searched.
MAX_QUERY_CHARS = 8000


def check_question(query: str) -> None:
    """An InputError for a question kb cannot search: empty, or longer than `MAX_QUERY_CHARS`."""
    if not query.strip():
        raise InputError("nothing to search for: the question is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InputError(f"the question is too long: {len(query):,} characters (at most {MAX_QUERY_CHARS:,})")
