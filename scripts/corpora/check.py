"""Check each scripts/corpora/*-queries.json: valid JSON, labelled paths exist, no duplicate questions."""

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def problems(queries_file: Path) -> list[str]:
    corpus = HERE / queries_file.name.removesuffix("-queries.json")
    entries = json.loads(queries_file.read_text(encoding="utf-8"))
    found: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        question = entry["q"].strip().lower()
        if question in seen:
            found.append(f"duplicate question: {entry['q']}")
        seen.add(question)
        if not entry["relevant"]:
            found.append(f"no label: {entry['q']}")
        for label in entry["relevant"]:
            if not (corpus / label.split("#")[0]).is_file():
                found.append(f"missing file {label}: {entry['q']}")
    return found


def main() -> int:
    failed = False
    for queries_file in sorted(HERE.glob("*-queries.json")):
        found = problems(queries_file)
        count = len(json.loads(queries_file.read_text(encoding="utf-8")))
        print(f"{queries_file.name}: {count} questions, {len(found)} problems")
        for line in found:
            print("  " + line)
        failed = failed or bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
