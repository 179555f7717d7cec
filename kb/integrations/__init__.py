"""kb inside RAG frameworks: retrievers over kb search, in this process or over a `kb serve`.

    langchain.py    `KbRetriever`, a langchain-core `BaseRetriever` giving LangChain `Document`s
    llamaindex.py   `KbRetriever`, a llama-index-core `BaseRetriever` giving `NodeWithScore`s
    source.py       where both get their hits: a `KnowledgeBase`, or `GET /search` of a `kb serve`

Each framework is an extra (`kb[langchain]`, `kb[llamaindex]`); importing an adapter without it raises an
ImportError that names the extra to install.
"""


def missing_extra(extra: str, error: ImportError) -> ImportError:
    """The ImportError to raise when an adapter's framework is not installed."""
    return ImportError(
        f"kb.integrations.{extra} needs {error.name or 'its framework'}: pip install 'kb[{extra}]'",
        name=error.name,
    )
