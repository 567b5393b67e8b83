"""Read params.yaml the way DVC does (YAML 1.2), refusing what PyYAML would let through,
and word any error in it as one line.

    from pipeline.params_yaml import read_yaml, YamlError
    raw = read_yaml(Path("params.yaml"))   # a dict; YamlError: one line with line and column

Two things PyYAML does silently that make a settings file lie: a key written twice keeps the
last value (so `lrs:` edited in one place is overridden by a forgotten copy below it), and
`1e-4` is a string in YAML 1.1. Syntax errors keep PyYAML's line and column (1-based).
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError


class YamlError(ValueError):
    """The one line shown to the user: `<file>: line L, column C: what is wrong`."""


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads `1e6` as a string (YAML 1.1); DVC reads YAML 1.2, where it is a float."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?(?:[eE][-+]?\d+)$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$"
               r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _check_unique_keys(node: yaml.Node, path: str, source: str, seen_nodes: set[int]) -> None:
    """Walk the composed document: a key twice in one mapping is an error naming its dotted path."""
    if id(node) in seen_nodes:  # an alias points back at a node already walked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[object, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            dotted = f"{path}.{key}" if path else str(key)
            if key is not None and key != "<<":  # `<<` merges are PyYAML's to resolve
                if key in first:
                    raise YamlError(f"{source}: {_where(key_node.start_mark)}: duplicate key {dotted} "
                                    f"(first at {_where(first[key].start_mark)}); write each key once")
                first[key] = key_node
            _check_unique_keys(value_node, dotted, source, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, f"{path}.{i}" if path else str(i), source, seen_nodes)


def read_yaml(path: Path) -> object:
    """The document in `path` (None when empty); YamlError for bad syntax or a duplicate key."""
    source = path.name
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise YamlError(f"{source}: not a text file (not UTF-8)") from None
    except IsADirectoryError:
        raise YamlError(f"{path}: is a folder, not a params file") from None
    loader = _Yaml12Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, "", source, set())
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "not valid YAML"
        where = f"{_where(mark)}: " if mark is not None else ""
        raise YamlError(f"{source}: {where}{what}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    finally:
        loader.dispose()


def error_line(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """The first validation error as `<file>: <dotted.key>: what is wrong (got ...)`, listing the
    allowed keys for an unknown one."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        # walk to the model that owns the bad key to list what it allows
        owner = model
        for part in e["loc"][:-1]:
            field = owner.model_fields.get(str(part)) if isinstance(owner, type) else None
            ann = getattr(field, "annotation", None)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                owner = ann
            elif getattr(ann, "__args__", None) and isinstance(ann.__args__[-1], type) \
                    and issubclass(ann.__args__[-1], BaseModel):
                owner = ann.__args__[-1]  # dict[str, Model]: the next part is the name
        allowed = ", ".join(owner.model_fields)
        return f"{source}: {loc}: unknown key (allowed: {allowed})"
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        # a validator's message that starts with its own dotted key (names may hold `/`, `-`: it
        # is reporting them as unsafe) is printed as it is
        if ": " in msg and re.fullmatch(r"[\w.][\w./-]*", msg.split(": ")[0]):
            return f"{source}: {loc + '.' if loc else ''}{msg}"
    got = e.get("input")
    tail = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: {loc or '(top level)'}: {msg}{tail}"
