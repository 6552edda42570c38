"""Turns pydantic's validation errors into one (key path, reason) a person can act on: the misspelt
key with its likely meaning, the missing key, the unknown action or kind, never pydantic's internal
names (the discriminator's value in the path, 'Unable to extract tag', enum reprs)."""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from testbed.scenario_model import Scenario
from testbed.scenario_values import KeyedValueError

_TAG_FIELDS = ("action", "kind")


def _unwrap(t: Any) -> Any:
    """Annotated and Optional stripped; a union of several types becomes the tuple of its members."""
    while True:
        origin = get_origin(t)
        if origin is Annotated:
            t = get_args(t)[0]
        elif origin in (Union, types.UnionType):
            members = tuple(a for a in get_args(t) if a is not type(None))
            if len(members) > 1:
                return members
            t = members[0]
        else:
            return t


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _tags(members: tuple) -> dict[str, type[BaseModel]]:
    """A discriminated union's tag values (as the user writes them) and their models."""
    out = {}
    for m in members:
        if _is_model(m):
            for name in _TAG_FIELDS:
                if name in m.model_fields:
                    out.update({str(v): m for v in get_args(m.model_fields[name].annotation)})
    return out


def _walk(loc: tuple) -> tuple[str, Any]:
    """The key path for a pydantic location, and the type found there."""
    t: Any = Scenario
    path = ""
    for part in loc:
        t = _unwrap(t)
        if isinstance(t, tuple):
            tagged = _tags(t).get(part) if isinstance(part, str) else None
            if tagged is not None:
                t = tagged  # the discriminator's value: pydantic's, not a key the user wrote
                continue
            if isinstance(part, str):
                continue    # a plain union's member name, such as 'list[str]'
            t = next((m for m in t if get_origin(m) is list), None)
        if isinstance(part, int):
            path += f"[{part}]"
            t = get_args(t)[0] if get_origin(t) is list else None
        else:
            path += f".{part}" if path else str(part)
            fields = t.model_fields if _is_model(t) else {}
            t = fields[part].annotation if part in fields else None
    return path, _unwrap(t)


def _join(path: str, key: str) -> str:
    if not key:
        return path
    if not path:
        return key
    return path + key if key.startswith("[") else f"{path}.{key}"


def _suggest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _misspelt_tag(err: dict) -> tuple[str, str] | None:
    """For a step or primary without its `action`/`kind`: the key that looks like a misspelling of it."""
    if err["type"] != "union_tag_not_found" or not isinstance(err.get("input"), dict):
        return None
    tag = str(err["ctx"]["discriminator"]).strip("'")
    members = _walk(err["loc"])[1]
    known = {f for m in (members if isinstance(members, tuple) else ()) if _is_model(m) for f in m.model_fields}
    unknown = [k for k in err["input"] if isinstance(k, str) and k not in known]
    match = difflib.get_close_matches(tag, unknown, n=1, cutoff=0.6)
    return (match[0], tag) if match else None


def _describe(err: dict) -> tuple[str, str]:
    loc, kind, msg = tuple(err["loc"]), err["type"], err["msg"]
    path, found = _walk(loc)
    if kind == "extra_forbidden":
        parent = _walk(loc[:-1])[1]
        fields = list(parent.model_fields) if _is_model(parent) else []
        bad = str(loc[-1])
        hint = _suggest(bad, fields) or (f"; expected one of: {', '.join(fields)}" if fields else "")
        return path, f"unknown key {bad!r}{hint}"
    if kind == "missing":
        return path, f"missing key {loc[-1]!r}"
    if kind == "union_tag_not_found":
        misspelt = _misspelt_tag(err)
        if misspelt:
            return _join(path, misspelt[0]), f"unknown key {misspelt[0]!r} (did you mean {misspelt[1]!r}?)"
        tag = str(err["ctx"]["discriminator"]).strip("'")
        tags = list(_tags(found)) if isinstance(found, tuple) else []
        return path, f"missing key {tag!r} (one of: {', '.join(tags)})"
    if kind == "union_tag_invalid":
        tag = str(err["ctx"]["discriminator"]).strip("'")
        tags = list(_tags(found)) if isinstance(found, tuple) else []
        value = str(err["ctx"]["tag"])
        return path, f"unknown {tag} {value!r}" + (_suggest(value, tags) or f"; expected one of {', '.join(map(repr, tags))}")
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, KeyedValueError):
        return _join(path, error.key) or "(top level)", str(error)
    reason = msg.removeprefix("Value error, ")
    if kind in ("literal_error", "enum") and isinstance(err.get("input"), str):
        options = [o.strip("'") for o in str(err["ctx"]["expected"]).replace(" or ", ", ").split(", ")]
        return path, f"{_short(err['input'])} is not allowed{_suggest(err['input'], options)}; {reason}"
    value = err.get("input")
    if kind != "value_error":
        reason += " (got a mapping)" if isinstance(value, dict) else " (got a list)" if isinstance(value, list) \
            else f" (got {_short(value)})"
    return path, reason


def explain(e: ValidationError) -> tuple[str, str]:
    """The error to show first (an unknown key before anything it may have caused), with a count of
    the others."""
    errors = e.errors(include_url=False)
    ranked = sorted(errors, key=lambda err: 0 if err["type"] == "extra_forbidden" or _misspelt_tag(err) else 1)
    key, reason = _describe(ranked[0])
    # a key missing beside a misspelt one is the same mistake, not another
    misspelt_in = {tuple(err["loc"][:-1]) for err in errors if err["type"] == "extra_forbidden"}
    others = [err for err in errors if err is not ranked[0]
              and not (err["type"] == "missing" and tuple(err["loc"][:-1]) in misspelt_in)]
    more = f" (and {len(others)} more)" if others else ""
    return key or "(top level)", reason + more
