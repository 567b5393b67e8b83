"""Read params.yaml the way DVC does (YAML 1.2), refusing what PyYAML would let through,
and word any error in it as one line.

    from pipeline.params_yaml import read_yaml, YamlError
    raw = read_yaml(Path("params.yaml"))   # a dict; YamlError: one line with line and column

Two things PyYAML does silently that make a settings file lie: a key written twice keeps the
last value (so `lrs:` edited in one place is overridden by a forgotten copy below it), and
`1e-4` is a string in YAML 1.1. Syntax errors keep PyYAML's line and column (1-based).

What it will read is bounded, each bound with its reason (a settings file is a few kilobytes):
only a regular file (a FIFO or a device would block or never end), at most MAX_BYTES, nesting at
most MAX_DEPTH deep, and at most MAX_NODES values once every alias is expanded (an "alias bomb"
of nine nested anchors is a 1 KB file that expands to a billion values: refused before anything
expands it). Every message is one line of at most MAX_LINE characters (`clip`, `shown`).
"""

from __future__ import annotations

import os
import re
import reprlib
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError


class YamlError(ValueError):
    """The one line shown to the user: `<file>: line L, column C: what is wrong`."""


# bounds on what is read; the default params.yaml is 9.4 KB, 387 values (keys counted), 4 levels deep
MAX_BYTES = 1_000_000  # 100x the largest settings file normlab ships: more is not a settings file
MAX_DEPTH = 32  # params nest 4 levels (report.primary.claim1b.endpoint); PyYAML recurses per level
MAX_NODES = 100_000  # values after alias expansion, 250x params.yaml's; past it validation (and any
# error quoting the value) would expand an alias bomb
MAX_LINE = 1000  # characters in any one error line (a 20,000-character name is shown clipped)


def clip(text: object, limit: int = 120) -> str:
    """`text` on one line, at most `limit` characters: control characters escaped, the middle of a
    longer text replaced by `...(N characters)...`."""
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))
    if len(text) <= limit:
        return text
    keep = max(limit - 24, 8)
    return f"{text[: keep // 2]}...({len(text)} characters)...{text[len(text) - keep // 2 :]}"


_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxtuple, _SHOWN.maxdict = 3, 8, 8, 6
_SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 80, 80, 60


def shown(value) -> str:
    """A value as an error line quotes it: its repr, bounded in length and nesting."""
    return clip(_SHOWN.repr(value), 200)


def read_regular_file(path: Path, what: str = "params file", limit: int = MAX_BYTES) -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes; YamlError otherwise.

    Opened without blocking (O_NONBLOCK: opening a FIFO waits for a writer otherwise) and checked
    on the open handle (fstat), so what is read is what was checked."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise YamlError(f"{clip(path, 300)}: file not found") from None
    except IsADirectoryError:
        raise YamlError(f"{clip(path, 300)}: is a folder, not a {what}") from None
    except (OSError, ValueError) as exc:  # permission, a name too long, a NUL in the name
        raise YamlError(f"{clip(path, 300)}: cannot be read ({clip(getattr(exc, 'strerror', None) or exc)})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise YamlError(f"{clip(path, 300)}: is a folder, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a FIFO (named pipe)"
                if stat.S_ISFIFO(st.st_mode)
                else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "not a regular file"
            )
            raise YamlError(f"{clip(path, 300)}: is {kind}, not a {what}; give a regular file")
        if st.st_size > limit:
            raise YamlError(f"{clip(path, 300)}: {st.st_size} bytes (at most {limit}: a {what} is a few kilobytes)")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as fh:
            fd = None  # type: ignore[assignment]  # the file object owns it now: not closed below
            data = fh.read(limit + 1)  # the size may have grown since fstat
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > limit:
        raise YamlError(f"{clip(path, 300)}: more than {limit} bytes (at most {limit}: a {what} is a few kilobytes)")
    return data


class _Bounded:
    """Composer hook: nesting depth counted as nodes are composed, refused before PyYAML's own
    recursion (one Python frame per level) could overflow into a traceback."""

    _depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"nested more than {MAX_DEPTH} levels deep (at most {MAX_DEPTH}: params nest 4 levels)",
                self.peek_event().start_mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse, before anything expands it, a document whose aliases expand past MAX_NODES values
    or MAX_DEPTH levels, or an anchor that contains an alias of itself (a value holding itself).
    Sizes are counted on the composed graph, where an alias is one shared node: each node once."""
    size: dict[int, tuple[int, int]] = {}  # id(node) -> (values once expanded, levels once expanded)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            n = 1 + sum(size[id(k)][0] for k in kids)
            d = 1 + max((size[id(k)][1] for k in kids), default=0)
            open_.discard(key)
            size[key] = (n, d)
            if n > MAX_NODES:
                raise YamlError(
                    f"{source}: {_where(node.start_mark)}: this value expands (its aliases included) "
                    f"to more than {MAX_NODES} values (at most {MAX_NODES}: params.yaml holds 387; "
                    "an alias bomb is refused before it expands)"
                )
            if d > MAX_DEPTH:
                raise YamlError(
                    f"{source}: {_where(node.start_mark)}: aliases nest this value more than {MAX_DEPTH} "
                    f"levels deep (at most {MAX_DEPTH}: params nest 4 levels)"
                )
            continue
        if key in size:
            continue
        if key in open_:
            raise YamlError(
                f"{source}: {_where(node.start_mark)}: an alias refers to the anchored value that "
                "contains it (a value cannot hold itself)"
            )
        open_.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _Yaml12Loader(_Bounded, yaml.SafeLoader):
    """PyYAML reads `1e6` as a string (YAML 1.1); DVC reads YAML 1.2, where it is a float."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?(?:[eE][-+]?\d+)$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$"
        r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _check_unique_keys(node: yaml.Node, path: str, source: str, seen_nodes: set[int]) -> None:
    """Walk the composed document: a key twice in one mapping is an error naming its dotted path."""
    if id(node) in seen_nodes:  # an alias points back at a node already walked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.ScalarNode) and (control := _CONTROL.search(node.value)):
        bad = control.group()
        raise YamlError(
            f"{source}: {_where(node.start_mark)}: {clip(path, 120) or 'a value'}: holds the control "
            f"character #x{ord(bad):04x} (a setting is printable text: no NUL or other control character)"
        )
    if isinstance(node, yaml.MappingNode):
        first: dict[object, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            dotted = f"{path}.{clip(key, 60)}" if path else clip(key, 60)
            _check_unique_keys(key_node, dotted, source, seen_nodes)
            if key is not None and key != "<<":  # `<<` merges are PyYAML's to resolve
                if key in first:
                    raise YamlError(
                        f"{source}: {_where(key_node.start_mark)}: duplicate key {clip(dotted, 300)} "
                        f"(first at {_where(first[key].start_mark)}); write each key once"
                    )
                first[key] = key_node
            _check_unique_keys(value_node, dotted, source, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique_keys(item, f"{path}.{i}" if path else str(i), source, seen_nodes)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # C0 controls but tab and newline, and DEL


def _reader_error(exc, text: str, source: str) -> str:
    pos = exc.position
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
    return (
        f"{source}: line {line}, column {column}: character #x{char:04x} is not allowed in YAML "
        "(a settings file is printable text: no NUL or other control character)"
    )


def read_yaml(path: Path, what: str = "params file") -> object:
    """The document in `path` (None when empty); YamlError for a file that is not a bounded regular
    text file, bad syntax, a duplicate key, a control character in a value or an alias bomb."""
    path = Path(path)
    source = clip(path.name, 120)
    data = read_regular_file(path, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise YamlError(f"{source}: not a text file (not UTF-8)") from None
    try:
        loader = _Yaml12Loader(text)  # PyYAML's reader checks every character here
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a NUL byte, ...)
        raise YamlError(_reader_error(exc, text, source)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source)
        _check_unique_keys(node, "", source, set())
        return loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        raise YamlError(_reader_error(exc, text, source)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = clip(exc.problem or exc.context or "not valid YAML", 300)
        where = f"{_where(mark)}: " if mark is not None else ""
        raise YamlError(f"{source}: {where}{what}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise YamlError(f"{source}: not valid YAML: {clip(first, 300)}") from None
    except RecursionError:  # a backstop: the composer's depth and the expansion are bounded above
        raise YamlError(f"{source}: nested too deeply (at most {MAX_DEPTH} levels: params nest 4 levels)") from None
    finally:
        loader.dispose()


def error_line(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """The first validation error as `<file>: <dotted.key>: what is wrong (got ...)`, listing the
    allowed keys for an unknown one; one line of at most MAX_LINE characters (a long key or value
    is shown clipped)."""
    return clip(_error_line(err, model, source), MAX_LINE)


def _error_line(err: ValidationError, model: type[BaseModel], source: str) -> str:
    e = err.errors(include_url=False)[0]
    loc = ".".join(clip(p, 60) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        # walk to the model that owns the bad key to list what it allows
        owner = model
        for part in e["loc"][:-1]:
            field = owner.model_fields.get(str(part)) if isinstance(owner, type) else None
            ann: Any = getattr(field, "annotation", None)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                owner = ann
            elif (
                getattr(ann, "__args__", None)
                and isinstance(ann.__args__[-1], type)
                and issubclass(ann.__args__[-1], BaseModel)
            ):
                owner = ann.__args__[-1]  # dict[str, Model]: the next part is the name
        allowed = ", ".join(owner.model_fields)
        return f"{source}: {loc}: unknown key (allowed: {allowed})"
    msg = clip(e["msg"], MAX_LINE)
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        # a validator's message that starts with its own dotted key (names may hold `/`, `-`: it
        # is reporting them as unsafe) is printed as it is
        if ": " in msg and re.fullmatch(
            r"[\w.][\w./-]*(?:\.\.\.\(\d+ characters\)\.\.\.[\w./-]*)?", msg.split(": ")[0]
        ):
            return f"{source}: {loc + '.' if loc else ''}{msg}"
    got = e.get("input")
    tail = "" if isinstance(got, dict) else f" (got {shown(got)})"
    return f"{source}: {loc or '(top level)'}: {msg}{tail}"
