"""A study file, read and validated: what pipeline.study runs and pipeline.compare compares.

    from pipeline.study_file import load_study
    name, setups = load_study("studies/deep.yaml")   # setup -> merged params dict, each validated

A study file names a base params file and, per setup, what it changes (pipeline/study.py's
docstring shows one). Reading it runs nothing: the runner (pipeline.study) and the comparison
(pipeline.compare) both import this loader, and neither imports the other.
"""
from __future__ import annotations

import copy
from pathlib import Path

STUDY_KEYS = {"params", "overrides", "setups", "description"}


def merge(base: dict, over: dict) -> dict:
    """Nested dict update: a dict merges key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_study(path: str | Path) -> tuple[str, dict[str, dict]]:
    """(study name, setup -> merged params dict), every setup validated; ConfigError on a bad one."""
    from pydantic import ValidationError

    from pipeline.config import ConfigError, Params
    from pipeline.params_yaml import YamlError, error_line, read_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: study file not found")
    try:
        raw = read_yaml(path)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study is a mapping with keys {', '.join(sorted(STUDY_KEYS))}")
    extra = set(raw) - STUDY_KEYS
    if extra:
        raise ConfigError(f"{path}: {sorted(extra)[0]}: unknown key (allowed: {', '.join(sorted(STUDY_KEYS))})")
    setups = raw.get("setups")
    if not isinstance(setups, dict) or not setups:
        raise ConfigError(f"{path}: setups: needs at least one setup (name -> what it changes)")
    base_path = Path(raw.get("params", "params.yaml"))
    if not base_path.is_absolute():
        base_path = path.parent / base_path if (path.parent / base_path).exists() else base_path
    try:
        base = read_yaml(base_path)
    except (YamlError, OSError) as exc:
        raise ConfigError(f"{path}: params: {exc}") from None
    common = raw.get("overrides") or {}
    out = {}
    for name, over in setups.items():
        if not str(name).replace("_", "").replace("-", "").isalnum() or name in ("figures", "tables"):
            raise ConfigError(f"{path}: setups.{name}: a setup name is letters, digits, - and _ "
                              "(not figures or tables: the comparison writes those)")
        merged = merge(merge(base, common), over or {})
        try:
            Params.model_validate(merged)
        except ValidationError as err:
            raise ConfigError(error_line(err, Params, f"{path}: setups.{name}")) from None
        out[str(name)] = merged
    return path.stem, out
