"""What a space embeds for a chunk: the context line (title and heading path) and the headed input."""

from kb.core.inputs import context_line, embedding_input
from kb.records import ChunkInput


def test_the_context_is_the_title_then_the_heading_path() -> None:
    assert context_line("Node.js fs", ["File system", "fs.mkdtemp(prefix)"]) == (
        "Node.js fs > File system > fs.mkdtemp(prefix)"
    )


def test_a_title_the_path_already_starts_with_is_not_repeated() -> None:
    assert context_line("File  system", ["File System", "fs.mkdtemp(prefix)"]) == (
        "File System > fs.mkdtemp(prefix)"
    )


def test_blank_parts_are_left_out_and_nothing_known_gives_no_context() -> None:
    assert context_line("  ", ["", "Usage\n"]) == "Usage"
    assert context_line("", []) == ""


def test_a_headed_input_puts_the_context_line_before_the_text() -> None:
    assert embedding_input(ChunkInput.HEADED, "Guide > Install", "Run it.") == "Guide > Install\n\nRun it."
    assert embedding_input(ChunkInput.TEXT, "Guide > Install", "Run it.") == "Run it."
    assert embedding_input(ChunkInput.HEADED, "", "Run it.") == "Run it."
