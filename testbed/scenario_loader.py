"""Reading a scenario file: bounded read, sandboxed template, strict YAML, validation. Every problem
becomes a ScenarioError naming the file, the key (or line) and the reason."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from testbed.errors import ScenarioError
from testbed.packet_capture import filter_problem
from testbed.scenario_errors import explain
from testbed.scenario_model import Scenario
from testbed.scenario_template import TemplateRefused, render_template
from testbed.scenario_values import name_from_stem

MAX_FILE_BYTES = 1 << 20
MAX_YAML_DEPTH = 12        # a valid scenario nests 6 deep
MAX_YAML_NODES = 50_000    # scalars, collections and aliases in the text
MAX_EXPANDED_NODES = 100_000  # the same with every alias expanded

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when there, else pure Python


class _Refused(Exception):
    def __init__(self, key: str, reason: str):
        super().__init__(reason)
        self.key, self.reason = key, reason


class ScenarioYamlLoader(_Base):  # type: ignore[misc, valid-type]
    """Safe YAML that refuses duplicate keys (YAML would keep the last silently) and keys that are
    not strings (yes, on, null and numbers are not strings in YAML 1.1)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            key = self.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                shown = repr(key) if isinstance(key_node, yaml.ScalarNode) else "a collection"
                raise _Refused(f"line {line}", f"the key {shown} is not a string; quote it (YAML reads yes/no/"
                               "on/off/null and numbers as other types)")
            if key in seen:
                raise _Refused(f"line {line}", f"duplicate key {key!r} (also on line {seen[key]}); YAML would "
                               "silently keep only the last one")
            seen[key] = line
        return super().construct_mapping(node, deep)


def _scan(text: str) -> None:
    """Bounds nesting and size from the event stream, before anything is composed: the composer
    recurses (in C with libyaml) once per level."""
    depth = count = 0
    for event in yaml.parse(text, Loader=_Base):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise _Refused(f"line {event.start_mark.line + 1}", f"nested deeper than {MAX_YAML_DEPTH} levels; "
                               "a scenario needs at most 6")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif not isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            continue
        count += 1
        if count > MAX_YAML_NODES:
            raise _Refused(f"line {event.start_mark.line + 1}", f"more than {MAX_YAML_NODES} YAML values")


def _expanded_size(value: Any, memo: dict[int, int], open_: set[int]) -> int:
    if not isinstance(value, (list, dict)):
        return 1
    if id(value) in memo:
        return memo[id(value)]
    if id(value) in open_:
        raise _Refused("(yaml)", "an alias refers to a collection that contains it")
    open_.add(id(value))
    items = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
    size = 1 + sum(_expanded_size(v, memo, open_) for v in items)
    open_.discard(id(value))
    memo[id(value)] = size
    return size


def parse_yaml(text: str) -> Any:
    try:
        _scan(text)
        loader = ScenarioYamlLoader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as e:  # a character YAML does not allow; it has a position, no mark
        line = text[:e.position].count("\n") + 1
        code = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "?")
        raise _Refused(f"line {line}", f"invalid YAML: character #x{code:04x} is not allowed ({e.reason})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"line {mark.line + 1}" if mark else "(yaml)"
        problem = getattr(e, "problem", None) or str(e)
        raise _Refused(where, f"invalid YAML: {' '.join(str(problem).split())}") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits
        raise _Refused("(yaml)", f"invalid YAML: {str(e)[:200]}") from None
    if _expanded_size(data, {}, set()) > MAX_EXPANDED_NODES:
        raise _Refused("(yaml)", f"more than {MAX_EXPANDED_NODES} values once its aliases are expanded")
    return data


def read_source(path: Path) -> str:
    file = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ScenarioError(file, "(file)", "no such file") from None
    except (OSError, ValueError) as e:
        raise ScenarioError(file, "(file)", f"cannot read it: {getattr(e, 'strerror', None) or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ScenarioError(file, "(file)", "a directory, not a scenario file")
    if not stat.S_ISREG(st.st_mode):
        raise ScenarioError(file, "(file)", "not a regular file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ScenarioError(file, "(file)", f"cannot read it: {e.strerror or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(file, "(file)", f"larger than {MAX_FILE_BYTES >> 20} MiB; a scenario is a short text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ScenarioError(file, f"line {line}", f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                            f"{e.start})") from None
    if "\0" in text:
        line = text[:text.index("\0")].count("\n") + 1
        raise ScenarioError(file, f"line {line}", "a NUL character: this is not a text file")
    return text


def load_scenario(path: str | Path, variables: dict[str, Any] | None = None) -> Scenario:
    """Renders, parses and validates a scenario file; any problem is a ScenarioError naming file and key."""
    path = Path(path)
    file = str(path)
    source = read_source(path)
    try:
        text = render_template(source, variables)
        data = parse_yaml(text)
    except (TemplateRefused, _Refused) as e:
        raise ScenarioError(file, e.key, e.reason) from None
    if not isinstance(data, dict):
        raise ScenarioError(file, "(top level)", "expected a mapping with name, vms and steps")
    if "name" not in data:
        data["name"] = name_from_stem(path.stem)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        key, reason = explain(e)
        raise ScenarioError(file, key, reason) from e
    except (RecursionError, MemoryError) as e:
        raise ScenarioError(file, "(top level)", f"too large or too deep to validate ({type(e).__name__})") from None
    check_capture_filters(file, scenario)
    return scenario


def check_capture_filters(file: str, scenario: Scenario) -> None:
    """Capture filters are tcpdump's: tcpdump compiles each one, so that a bad one is refused here."""
    keys = {"start-capture": "filter", "check-capture": "match"}
    for i, step in enumerate(scenario.steps):
        if (key := keys.get(step.action)) is None:
            continue
        if (problem := filter_problem(getattr(step, key))) is not None:
            raise ScenarioError(file, f"steps[{i}].{key}", f"not a filter tcpdump accepts: {problem}")
