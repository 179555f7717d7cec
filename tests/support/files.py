"""Files the tests write and read: the repository root, the handbook corpus, `write`."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


# A small documentation corpus written for these tests (the docs of "Harbor", a fictional web framework),
# and questions about it labelled with the pages that answer them.
HANDBOOK = PROJECT_ROOT / "tests" / "data" / "handbook"


HANDBOOK_QUERIES = PROJECT_ROOT / "tests" / "data" / "handbook-queries.json"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
