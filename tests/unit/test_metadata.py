"""Document metadata as stored (kb.core.metadata.normalize) and the `--where` conditions on it."""

import datetime as dt

import pytest

from kb.core.formats import markdown_document
from kb.core.metadata import merged, normalize, parse_assignments, parse_where
from kb.errors import InputError

FRONT_MATTER = """---
Title: Deploying
Tags: [API, cli, API]
date: 2024-03-01
updated: 2024-03-02T10:30:00+02:00
draft: false
version: 2
Author:
  Name: Ada
  Mail: ~
authors:
  - name: Ada
  - name: Grace
summary: ""
---
# Deploying
"""


def test_front_matter_is_stored_flat_with_lower_case_keys_iso_dates_and_lists_of_scalars() -> None:
    metadata = normalize(markdown_document(FRONT_MATTER).metadata)
    assert metadata == {
        "title": "Deploying",
        "tags": ["API", "cli"],
        "date": "2024-03-01",
        "updated": "2024-03-02T10:30:00+02:00",
        "draft": False,
        "version": 2,
        "author.name": "Ada",
        "authors.name": ["Ada", "Grace"],
    }


def test_values_of_any_type_become_scalars_and_nothing_nested_survives() -> None:
    metadata = normalize(
        {
            "when": dt.datetime(2024, 1, 5, 10),
            "n": float("inf"),
            "set": {"b", "a"},
            "deep": {"a": {"b": [1, [2]]}},
        }
    )
    assert metadata == {"when": "2024-01-05T10:00:00", "n": "inf", "set": ["a", "b"], "deep.a.b": [1, 2]}


def test_the_files_own_metadata_wins_over_the_runs() -> None:
    run = parse_assignments(["Project=kb", "tag=a", "tag=b", "source=wiki"])
    assert run == {"project": "kb", "tag": ["a", "b"], "source": "wiki"}
    assert merged(run, {"Source": "git"}) == {"project": "kb", "tag": ["a", "b"], "source": "git"}


@pytest.mark.parametrize("item", ["project", "=kb", "project=", "  =x"])
def test_a_meta_that_is_not_key_value_is_refused(item: str) -> None:
    with pytest.raises(InputError, match="expected key=value"):
        parse_assignments([item])


DOCUMENT = normalize(markdown_document(FRONT_MATTER).metadata)


@pytest.mark.parametrize(
    ("condition", "matches"),
    [
        ("tags=api", True),  # a list contains it, case-insensitively
        ("tags=ap", False),
        ("tags=web,cli", True),  # any of
        ("tags!=api", False),
        ("tags!=web", True),
        ("missing!=x", True),  # the negation of =: a document without the key matches it
        ("missing=x", False),  # an unknown key: no match
        ("tags", True),
        ("missing", False),
        ("date>=2024-01-01", True),
        ("date<2024-03-01", False),
        ("date<=2024-03-01", True),
        ("date=2024-03-01", True),
        ("updated=2024-03-02", True),  # a date-only condition compares the stored moment's day
        ("updated<=2024-03-02", True),
        ("updated>2024-03-02T08:00Z", True),  # 10:30+02:00 is 08:30 UTC
        ("updated>2024-03-02T09:00Z", False),
        ("version>=2", True),
        ("version<10", True),  # numbers compare as numbers, not text ("10" < "2")
        ("version=2.0", True),
        ("draft=false", True),
        ("author.name=ada", True),
        ("authors.name=grace", True),
        ("title>Alpha", True),  # neither date nor number: case-folded text
    ],
)
def test_where_conditions(condition: str, matches: bool) -> None:
    where = parse_where([condition])
    assert where is not None and where.matches(DOCUMENT) is matches


def test_repeated_conditions_all_hold_and_a_mapping_means_equality() -> None:
    both = parse_where(["tags=api", "date>=2024-01-01"])
    assert both is not None and both.matches(DOCUMENT)
    neither = parse_where(["tags=api", "date>=2025-01-01"])
    assert neither is not None and not neither.matches(DOCUMENT)
    mapping = parse_where({"tags": ["web", "cli"], "draft": False, "version": 2})
    assert mapping is not None and mapping.matches(DOCUMENT)
    assert parse_where({"Tags": "web"}).matches(DOCUMENT) is False  # type: ignore[union-attr]
    assert parse_where(None) is None and parse_where([]) is None


@pytest.mark.parametrize("condition", ["=api", "tags=", "tags=>2", "tags!api", "date<", "tags=a,,b", "  "])
def test_a_malformed_condition_is_an_input_error_naming_it(condition: str) -> None:
    with pytest.raises(InputError, match="invalid where condition"):
        parse_where([condition])
