"""A study file, read and validated: what pipeline.study runs and pipeline.compare compares.

    from pipeline.study_file import load_study
    name, setups = load_study("studies/deep.yaml")   # setup -> merged params dict, each validated

A study file names a base params file and, per setup, what it changes (pipeline/study.py's
docstring shows one). Reading it runs nothing: the runner (pipeline.study) and the comparison
(pipeline.compare) both import this loader, and neither imports the other.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

STUDY_KEYS = {"params", "overrides", "setups", "description"}
# a study's name (its file's stem) and its setups' names become folders: runs/<study>/<setup>/,
# reports/<study>/<setup>/. Letters, digits, _ and -, not starting with - (a name like `..` or
# `.` would climb out of runs/ and reports/: `..yaml` replaced reports/report.md)
STUDY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
RESERVED = {"figures", "tables"}  # the comparison writes these beside the setups' folders


def merge(base: dict, over: dict) -> dict:
    """Nested dict update: a dict merges key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _checked_name(kind: str, name, where: str) -> str:
    from pipeline.config import LIMITS, ConfigError
    from pipeline.params_yaml import clip, shown

    # a YAML key 123 is an int: as a folder it is "123"; true, null or 1.5 are not names
    text = name if isinstance(name, str) else str(name) if type(name) is int else None
    if text is None or not STUDY_NAME.fullmatch(text) or text in RESERVED:
        raise ConfigError(
            f"{where}: {kind} name {shown(name)} is not allowed: letters, digits, _ and -, not starting "
            f"with - (it becomes a folder under runs/ and reports/; not {' or '.join(sorted(RESERVED))})"
        )
    lim = LIMITS["name"]
    if len(text) > lim.most:
        raise ConfigError(
            f"{where}: {kind} name {clip(text, 40)} has {len(text)} characters (at most {lim.most}: {lim.why})"
        )
    return text


def load_study(path: str | Path) -> tuple[str, dict[str, dict]]:
    """(study name, setup -> merged params dict), every setup validated; ConfigError on a bad one."""
    from pydantic import ValidationError

    from pipeline.config import ConfigError, Params
    from pipeline.params_yaml import YamlError, clip, error_line, read_yaml, shown

    path = Path(path)
    where = clip(path, 300)
    try:
        raw = read_yaml(path, "study file")
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    name = _checked_name("a study", path.stem, where)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a study is a mapping with keys {', '.join(sorted(STUDY_KEYS))}")
    extra = [k for k in raw if k not in STUDY_KEYS]
    if extra:
        raise ConfigError(f"{where}: {clip(extra[0], 60)}: unknown key (allowed: {', '.join(sorted(STUDY_KEYS))})")
    if not isinstance(raw.get("description", ""), str):
        raise ConfigError(f"{where}: description: must be text (got {shown(raw['description'])})")
    setups = raw.get("setups")
    if not isinstance(setups, dict) or not setups:
        raise ConfigError(f"{where}: setups: needs at least one setup (name -> what it changes)")
    common = raw.get("overrides") or {}
    if not isinstance(common, dict):
        raise ConfigError(f"{where}: overrides: must be a mapping of what every setup changes (got {shown(common)})")
    base_name = raw.get("params", "params.yaml")
    if not isinstance(base_name, str) or not base_name.strip():
        raise ConfigError(f"{where}: params: must be the path of a params file (got {shown(base_name)})")
    base_path = Path(base_name)
    if not base_path.is_absolute():
        base_path = path.parent / base_path if _exists(path.parent / base_path) else base_path
    try:
        base = read_yaml(base_path)
    except YamlError as exc:
        raise ConfigError(f"{where}: params: {exc}") from None
    if not isinstance(base, dict):
        raise ConfigError(f"{where}: params: {clip(base_path, 300)} is not a mapping of settings")
    out = {}
    for setup, over in setups.items():
        label = _checked_name("a setup", setup, f"{where}: setups.{clip(setup, 60)}")
        if over is not None and not isinstance(over, dict):
            raise ConfigError(
                f"{where}: setups.{label}: must be a mapping of what the setup changes, e.g. "
                f"{{model: {{depth: 6}}}} ({{}} for none; got {shown(over)})"
            )
        merged = merge(merge(base, common), over or {})
        try:
            Params.model_validate(merged)
        except ValidationError as err:
            raise ConfigError(error_line(err, Params, f"{where}: setups.{label}")) from None
        out[label] = merged
    return name, out


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long: not there
        return False
