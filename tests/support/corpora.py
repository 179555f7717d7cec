"""Generated corpora: distinct one-chunk texts in Markdown files, so that every test knows how many texts it
paid for. `write_sections` for numbered sections (some may carry POISON, which the emulator refuses);
`write_document` / `write_corpus` for versioned documents whose texts change with each version."""

import random
from collections.abc import Collection
from pathlib import Path

from tests.support.files import write


def write_sections(
    root: Path,
    count: int,
    *,
    per_file: int = 50,
    poison: Collection[int] = (),
    about: str = "lighthouse keeper",
) -> int:
    """`count` distinct one-chunk texts, `per_file` to a file (`doc0000.md`, ...); those numbered in `poison`
    contain the word POISON. Returns `count`."""
    for start in range(0, count, per_file):
        parts = []
        for n in range(start, min(count, start + per_file)):
            marker = " POISON" if n in poison else ""
            # Long enough (16 tokens or more) to be a chunk of its own rather than join a neighbour.
            parts.append(
                f"## Section {n}\n\nParagraph {n} about the {about} number {n}{marker}, a chunk of its own.\n"
            )
        write(root / f"doc{start // per_file:04d}.md", "\n".join(parts))
    return count


_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "amber",
    "basalt",
    "cobalt",
    "dune",
    "ember",
    "fjord",
    "garnet",
    "harbor",
    "iris",
    "jade",
    "kelp",
    "lagoon",
    "marble",
    "nectar",
    "onyx",
    "pearl",
    "quartz",
    "reef",
    "slate",
    "tundra",
    "umber",
]


def write_document(path: Path, number: int, sections: int, *, version: int = 0, seed: int = 0) -> int:
    """A Markdown file of `sections` short sections: one chunk each, texts unique to (number, version)."""
    rng = random.Random(f"{seed}-{version}-{number}")
    parts = [f"# Document {number}\n"]
    for section in range(sections):
        words = " ".join(rng.choice(_WORDS) for _ in range(12))
        parts.append(f"## Part {section}\n\nNote v{version} f{number} s{section}: {words}.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return sections


def write_corpus(root: Path, files: int, sections: int, *, version: int = 0, seed: int = 0) -> int:
    """`files` documents (`write_document`) under `root`; returns the number of distinct texts."""
    return sum(
        write_document(root / f"doc{number:03d}.md", number, sections, version=version, seed=seed)
        for number in range(files)
    )
