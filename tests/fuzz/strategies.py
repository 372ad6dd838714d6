"""Input generators shared by the fuzz targets: garbage, JSON, and near-valid documents built
from the pydantic models' own JSON schemas, each with the one mutation that spoiled it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel

Json = Any

# Values that break parsers in practice: type confusion, limits, non-finite floats, odd text.
EDGE_VALUES: list[Json] = [
    None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30, 0.5, -0.0, 1e308,
    math.inf, -math.inf, math.nan, "", " ", "0", "1e3", "true", "null", "NaN", "\x00", "\ud800",
    "é", "../../etc/passwd", "$(id)", "${HOME}", "<script>", [], {}, [None], {"": 1},
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(EDGE_VALUES),
    st.integers(100, 3000).map(lambda n: "a" * n),  # past every length limit
)
json_values: st.SearchStrategy[Json] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)


# A replacement value: the edge cases half the time (hypothesis' one_of picks branches evenly).
replacements = st.one_of(st.sampled_from(EDGE_VALUES), json_values)


def dumps(value: Json) -> str:
    # allow_nan: NaN/Infinity tokens are what a hostile peer sends too.
    return json.dumps(value, allow_nan=True)


def from_schema(
    schema: dict[str, Any], defs: dict[str, Any] | None = None
) -> st.SearchStrategy[Json]:
    """Values a JSON schema allows, for the subset pydantic writes (types, anyOf, $ref, const,
    enum, bounds, lengths, patterns, items and prefixItems)."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: from_schema(defs[name], defs))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([from_schema(s, defs) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "string":
        return _string(schema)
    if kind == "array":
        return _array(schema, defs)
    if kind == "object" or "properties" in schema:
        return _object(schema, defs)
    return json_values  # {}: anything


def _number(schema: dict[str, Any], integer: bool) -> st.SearchStrategy[Json]:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if integer:
        low = lo if lo is not None else (math.floor(xlo) + 1 if xlo is not None else None)
        high = hi if hi is not None else (math.ceil(xhi) - 1 if xhi is not None else None)
        return st.integers(low, high)
    return st.floats(
        min_value=lo if lo is not None else xlo,
        max_value=hi if hi is not None else xhi,
        exclude_min=lo is None and xlo is not None,
        exclude_max=hi is None and xhi is not None,
        allow_nan=False,
        allow_infinity=False,
    )


def _string(schema: dict[str, Any]) -> st.SearchStrategy[Json]:
    lo, hi = schema.get("minLength", 0), schema.get("maxLength")
    if "pattern" in schema:
        text = st.from_regex(schema["pattern"], fullmatch=True)
        return text.filter(lambda s: lo <= len(s) and (hi is None or len(s) <= hi))
    return st.text(min_size=lo, max_size=min(hi, 60) if hi is not None else 60)


def _array(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Json]:
    if "prefixItems" in schema:
        return st.tuples(*(from_schema(s, defs) for s in schema["prefixItems"])).map(list)
    lo, hi = schema.get("minItems", 0), schema.get("maxItems")
    items = from_schema(schema.get("items", {}), defs)
    return st.lists(items, min_size=lo, max_size=min(hi, lo + 5) if hi is not None else lo + 5)


@st.composite
def _object(draw: st.DrawFn, schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Json]:
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    out: dict[str, Json] = {}
    for name, sub in props.items():
        if name in required or draw(st.booleans()):
            out[name] = draw(from_schema(sub, defs))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in draw(st.lists(st.text(min_size=1, max_size=8), max_size=2)):
            out.setdefault(key, draw(from_schema(extra, defs)))
    return out


def valid_documents(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Json]]:
    """Documents the model's published JSON schema allows (not always what the model accepts:
    validators beyond the schema, such as cross-field checks, may still refuse them)."""
    return from_schema(model.model_json_schema())


@dataclass(frozen=True)
class Mutated:
    doc: Json
    path: tuple[str | int, ...]  # where the one mutation was made ((): nowhere)
    how: str
    original: Json = None  # the document before it

    def blames(self, message: str) -> bool:
        """Whether an error message points at the mutated place (see location_named)."""
        return location_named(message, self.path)


def _paths(doc: Json, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Json, path: tuple[str | int, ...], value: Json, delete: bool = False) -> Json:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        copy = dict(doc)
        if not rest:
            if delete:
                del copy[head]
            else:
                copy[head] = value
        else:
            copy[head] = _replace(doc[head], rest, value, delete)
        return copy
    copy_l = list(doc)
    if not rest:
        if delete:
            del copy_l[int(head)]
        else:
            copy_l[int(head)] = value
    else:
        copy_l[int(head)] = _replace(doc[int(head)], rest, value, delete)
    return copy_l


@st.composite
def mutate(draw: st.DrawFn, doc: Json, field_names: list[str] | None = None) -> Mutated:
    """One mutation of ``doc``: a value replaced (by garbage or a wrong type), a key dropped,
    or an unknown key added."""
    paths = [p for p in _paths(doc) if p]
    how = draw(st.sampled_from(["replace", "drop", "add"] if paths else ["add"]))
    if how == "add":
        parents = [p for p in _paths(doc) if isinstance(_get(doc, p), dict)]
        if not parents:
            return Mutated(draw(json_values), (), "replaced the whole document", doc)
        parent = draw(st.sampled_from(parents))
        names = st.sampled_from(field_names) if field_names else st.nothing()
        key = draw(st.one_of(st.text(min_size=1, max_size=12), names))
        return Mutated(
            _replace(doc, (*parent, key), draw(replacements)), (*parent, key), "added key", doc
        )
    path = draw(st.sampled_from(paths))
    if how == "drop" and isinstance(path[-1], str):
        return Mutated(_replace(doc, path, None, delete=True), path, "dropped key", doc)
    return Mutated(_replace(doc, path, draw(replacements)), path, "replaced value", doc)


def _get(doc: Json, path: tuple[str | int, ...]) -> Json:
    for p in path:
        doc = doc[p]
    return doc


def near_valid(model: type[BaseModel]) -> st.SearchStrategy[Mutated]:
    names = list(model.model_fields)
    return valid_documents(model).flatmap(lambda doc: mutate(doc, names))


def payload_bytes(model: type[BaseModel]) -> st.SearchStrategy[bytes]:
    """What a hostile or buggy peer could publish where ``model`` is expected."""
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        json_values.map(lambda v: dumps(v).encode()),
        valid_documents(model).map(lambda v: dumps(v).encode()),
        near_valid(model).map(lambda m: dumps(m.doc).encode()),
        # Truncated or spliced JSON: a torn message.
        valid_documents(model).flatmap(
            lambda v: st.integers(0, len(dumps(v))).map(lambda n: dumps(v)[:n].encode())
        ),
    )


def location_named(message: str, path: tuple[str | int, ...]) -> bool:
    """Whether an error message points at the mutated place: its dotted path or its last key."""
    if not path or ("Invalid JSON" in message and "column" in message):
        return True  # the mutation broke the JSON itself (a lone surrogate): its place is named
    dotted = ".".join(str(p) for p in path)
    if dotted in message or str(path[-1]) in message:
        return True
    # A list element breaking a rule across elements (a box's x1 <= x2) is the list's
    # error: the list must be named as the field in error ("box: ...").
    parent = ".".join(str(p) for p in path[:-1])
    return isinstance(path[-1], int) and bool(parent) and f"{parent}: " in message
