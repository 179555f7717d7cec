"""Document metadata: what is stored (a flat object of scalars and lists), and `--where` conditions on it.

Metadata comes from a file (Markdown front matter, PDF and Word document properties, HTML meta tags) and from
`kb ingest --meta key=value` for a whole run; the file's own wins. `normalize` makes any of it flat: keys
lower-case, nested mappings flattened with dots (`author: {name: X}` is `author.name`), lists of scalars (a
list of mappings becomes one list per key), dates as ISO strings, nulls and empty values left out.

A `--where` condition (docs/search.md) is `key=value` (on a list: contains), `key!=value` (the negation of
`=`: documents without the key match it), `key>=value`, `key<=value`, `key>value`, `key<value`, `key=a,b`
(any of) or `key` alone (present). Values compare as dates when the condition's is an ISO date (a date-only
value compares the stored one's day), else as numbers when both are numbers, else as case-folded text. One
function here decides every match, so every door and both backends agree.
"""

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kb.errors import InputError

Scalar = str | int | float | bool
Value = Scalar | list[Scalar]
Metadata = dict[str, Value]
# What `KnowledgeBase.search(where=...)` takes: {"tag": "api"}, {"tag": ["a", "b"]}, or condition strings.
WhereSpec = Mapping[str, object] | Sequence[str] | str

_MAX_DEPTH = 32


# -- what is stored ----------------------------------------------------------------------------------------


def normalize(raw: Mapping[str, object]) -> Metadata:
    """`raw` (parsed front matter, document properties, --meta) as kb stores it (see the module docstring)."""
    flat: dict[str, Value] = {}
    for key, value in raw.items():
        _flatten(flat, _key(key), value, in_list=False, depth=0)
    return {key: value for key, value in flat.items() if value != []}


def merged(run: Mapping[str, object], own: Mapping[str, object]) -> Metadata:
    """A document's metadata: its file's own over the run's `--meta` (a key the file sets is the file's)."""
    return {**normalize(run), **normalize(own)}


def _key(key: object) -> str:
    return " ".join(str(key).split()).lower()


def _flatten(flat: dict[str, Value], key: str, value: object, *, in_list: bool, depth: int) -> None:
    if not key or depth > _MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        for sub, item in value.items():
            _flatten(flat, _joined(key, _key(sub)), item, in_list=in_list, depth=depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        flat.setdefault(key, [])
        for item in sorted(value, key=str) if isinstance(value, set | frozenset) else value:
            _flatten(flat, key, item, in_list=True, depth=depth + 1)
    else:
        scalar = _scalar(value)
        if scalar is None:
            return
        previous = flat.get(key)
        if not in_list and not isinstance(previous, list):
            flat[key] = scalar  # a key given twice (`Tag` and `tag`): the later wins
            return
        listed = previous if isinstance(previous, list) else ([] if previous is None else [previous])
        if scalar not in listed:
            listed.append(scalar)
        flat[key] = listed


def _joined(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if key else ""


def _scalar(value: object) -> Scalar | None:
    if value is None:
        return None
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dt.date | dt.time):  # a datetime is a date
        return value.isoformat()
    text = str(value).strip()
    return text or None


def keywords(text: str) -> list[str]:
    """Document properties' keywords ("api, cli; http") as a list."""
    return [word for word in (part.strip() for part in re.split(r"[,;]", text)) if word]


def parse_assignments(items: Iterable[str], option: str = "--meta") -> Metadata:
    """`key=value` strings as metadata; a key given again makes a list. InputError on anything else."""
    found: dict[str, object] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not _key(key) or not value.strip():
            raise InputError(f"{option} {item!r}: expected key=value")
        previous = found.get(_key(key))
        if previous is None:
            found[_key(key)] = value
        else:
            found[_key(key)] = [*(previous if isinstance(previous, list) else [previous]), value]
    return normalize(found)


# -- --where -----------------------------------------------------------------------------------------------

_CONDITION = re.compile(r"\s*(?P<key>[^=!<>]+?)\s*(?:(?P<op>!=|>=|<=|=|>|<)(?P<value>.*))?", re.DOTALL)
_SYNTAX = "expected key=value, key!=value, key>=value (also <=, >, <), key=a,b or key alone"
_PRESENT = ""
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    op: str = ""  # "" (present), "=", "!=", ">=", "<=", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, metadata: Mapping[str, object]) -> bool:
        stored = metadata.get(self.key)
        if stored is None:
            return self.op == "!="
        items = stored if isinstance(stored, list) else [stored]
        if self.op == _PRESENT:
            return True
        if self.op in ("=", "!="):
            equal = any(_compare(item, value) == 0 for item in items for value in self.values)
            return equal if self.op == "=" else not equal
        return any(_holds(self.op, _compare(item, self.values[0])) for item in items)

    def __str__(self) -> str:
        return self.key + self.op + ",".join(self.values)


@dataclass(frozen=True, slots=True)
class Where:
    """Conditions that all hold (repeated `--where` are ANDed)."""

    conditions: tuple[Condition, ...]

    def matches(self, metadata: Mapping[str, object]) -> bool:
        return all(condition.matches(metadata) for condition in self.conditions)

    @property
    def required_keys(self) -> list[str]:
        """Keys a matching document must have (every condition's but `!=`'s): the database narrows by them."""
        return sorted({c.key for c in self.conditions if c.op != "!="})

    def __str__(self) -> str:
        return " and ".join(map(str, self.conditions))


def parse_where(spec: WhereSpec | None) -> Where | None:
    """Conditions from strings (`["tag=api", "year>=2020"]`) or a mapping (`{"tag": "api"}`: equality; a list
    value is any of; None: present). None or empty: no filter. InputError names a malformed condition."""
    if not spec:
        return None
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, Mapping):
        conditions = tuple(_from_mapping(str(key), value) for key, value in spec.items())
    else:
        conditions = tuple(parse_condition(str(text)) for text in spec)
    return Where(conditions)


def parse_condition(text: str) -> Condition:
    match = _CONDITION.fullmatch(text)
    if match is None or not _key(match["key"]):
        raise InputError(f"invalid where condition {text!r}: {_SYNTAX}")
    key, op, value = _key(match["key"]), match["op"] or _PRESENT, (match["value"] or "").strip()
    if op == _PRESENT:
        return Condition(key)
    if not value:
        raise InputError(f"invalid where condition {text!r}: a value is needed after {op!r} ({_SYNTAX})")
    if value[0] in "=!<>":
        raise InputError(f"invalid where condition {text!r}: {value[0]!r} after {op!r} ({_SYNTAX})")
    values = tuple(part.strip() for part in value.split(",")) if op in ("=", "!=") else (value,)
    if not all(values):
        raise InputError(f"invalid where condition {text!r}: an empty value in the list ({_SYNTAX})")
    return Condition(key, op, values)


def _from_mapping(key: str, value: object) -> Condition:
    if not _key(key):
        raise InputError(f"invalid where condition: an empty key ({_SYNTAX})")
    if value is None:
        return Condition(_key(key))
    items = value if isinstance(value, list | tuple | set | frozenset) else [value]
    values = tuple(_text(scalar) for scalar in map(_scalar, items) if scalar is not None)
    if not values:
        raise InputError(f"invalid where condition: {key!r} needs a value")
    return Condition(_key(key), "=", values)


def _holds(op: str, order: int) -> bool:
    return {">=": order >= 0, "<=": order <= 0, ">": order > 0, "<": order < 0}[op]


def _compare(stored: object, literal: str) -> int:
    """-1, 0 or 1: `stored` against the condition's `literal`, as dates, numbers or text (see above)."""
    moment = _moment(literal)
    if moment is not None and isinstance(stored, str):
        other = _moment(stored)
        if other is not None:
            return _order(*_aligned(other, moment))
    number = _number(literal)
    if number is not None:
        other_number = _number(stored)
        if other_number is not None:
            return _order(other_number, number)
    return _order(_text(stored).casefold(), literal.casefold())


def _order(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return None


def _moment(text: str) -> dt.date | None:
    """An ISO date (a `date`) or date and time (a naive UTC `datetime`), or None."""
    text = text.strip()
    if not _MOMENT.fullmatch(text):
        return None
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _aligned(stored: dt.date, literal: dt.date) -> tuple[dt.date, dt.date]:
    """A date-only condition compares the stored moment's day; a timed one, a stored day at midnight."""
    if not isinstance(literal, dt.datetime):
        return (stored.date() if isinstance(stored, dt.datetime) else stored), literal
    if not isinstance(stored, dt.datetime):
        return dt.datetime.combine(stored, dt.time()), literal
    return stored, literal
