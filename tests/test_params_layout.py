"""params.yaml survives `dvc exp run -S` (issue 20, item 4): DVC writes -S through
`dvc.utils.hydra.apply_overrides`, a ruamel.yaml round trip that replaces every list and scalar
with a plain value and dumps block style (flow maps past 80 columns broken, lists re-indented,
comments after a list item dropped). params.yaml is kept in the layout that dump writes back, so
an override changes only the overridden key's lines.

Fails if params.yaml gains a flow map or list (`{...}`, `[...]`), a list indented past its key, or a
comment or blank line right after a list item: the no-op round trip then rewrites those lines.
On main's earlier inline-map layout the no-op alone rewrote 136 lines."""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"

# (override, its key path, the value it sets): a list, a list ending a section, a scalar, a float in
# exponent form, a string, an entry of a nested map, one two levels further down
OVERRIDES = [
    ("optim.lrs=[0.1]", ("optim", "lrs"), [0.1]),
    ("grid.datasets=[digits]", ("grid", "datasets"), ["digits"]),
    ("train.steps=200", ("train", "steps"), 200),
    ("train.diverge_param=1e7", ("train", "diverge_param"), 1e7),
    ("tracking.experiment=other", ("tracking", "experiment"), "other"),
    ("variants.bn.affine=false", ("variants", "bn", "affine"), False),
    ("report.primary.claim2.smallest_effect=0.2", ("report", "primary", "claim2", "smallest_effect"), 0.2),
]


def rewritten(tmp_path: Path, overrides: list[str]) -> str:
    """params.yaml as DVC's own -S code leaves it."""
    copy = tmp_path / "params.yaml"
    shutil.copy(PARAMS, copy)
    apply_overrides(copy, overrides)
    return copy.read_text()


def changed_lines(old: str, new: str) -> tuple[set[int], set[int]]:
    """0-based numbers of the lines the diff removes from `old` and adds in `new`."""
    removed, added = set(), set()
    matcher = difflib.SequenceMatcher(a=old.splitlines(), b=new.splitlines(), autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag != "equal":
            removed.update(range(a0, a1))
            added.update(range(b0, b1))
    return removed, added


def key_lines(text: str, path: tuple[str, ...]) -> range:
    """0-based lines from `path`'s key to the last line of its value (PyYAML's node marks)."""
    node = yaml.compose(text)
    for name in path:
        key, node = next((k, v) for k, v in node.value if k.value == name)
    last, stack = node.end_mark.line, [node]
    if not isinstance(node, yaml.ScalarNode):  # a block collection ends at the next token: its last scalar
        last = key.start_mark.line
        while stack:
            n = stack.pop()
            if isinstance(n, yaml.ScalarNode):
                last = max(last, n.end_mark.line)
            else:
                stack.extend(v for pair in n.value for v in (pair if isinstance(pair, tuple) else (pair,)))
    return range(key.start_mark.line, last + 1)


def diff_text(old: str, new: str) -> str:
    return "\n".join(
        difflib.unified_diff(old.splitlines(), new.splitlines(), "params.yaml", "after -S", lineterm="", n=0)
    )


@pytest.mark.parametrize("overrides", [[], ["optim.name=sgd"]], ids=["nothing", "same-value"])
def test_a_no_op_override_leaves_params_yaml_byte_for_byte(tmp_path, overrides):
    old = PARAMS.read_text()
    new = rewritten(tmp_path, overrides)
    assert new == old, "dvc exp run -S rewrites these lines of params.yaml; write them the way it does:\n" + diff_text(
        old, new
    )


@pytest.mark.parametrize(("override", "path", "value"), OVERRIDES, ids=[o[0].split("=")[0] for o in OVERRIDES])
def test_an_override_changes_only_its_own_key_lines(tmp_path, override, path, value):
    old = PARAMS.read_text()
    new = rewritten(tmp_path, [override])
    want = yaml.safe_load(old)
    *parents, leaf = path
    at = want
    for name in parents:
        at = at[name]
    assert at[leaf] != value, "the override must change something"
    at[leaf] = value
    assert yaml.safe_load(new) == want  # the override took, and nothing else changed value
    removed, added = changed_lines(old, new)
    assert removed | added, "the override changed no line"
    outside = (removed - set(key_lines(old, path))) | (added - set(key_lines(new, path)))
    assert not outside, f"-S {override} rewrote lines outside {'.'.join(path)}:\n" + diff_text(old, new)


@pytest.mark.slow
def test_the_real_dvc_exp_run_set_param_changes_only_that_key(tmp_path):
    """Through the `dvc` binary: `dvc exp run --queue -S` writes the override into the queued
    experiment's commit by the same code as a workspace run (BaseStashQueue._stash_exp ->
    _update_params -> apply_overrides), without training the 66-cell default grid."""
    from tests.test_dvc_pipeline import _env, _make_repo, dvc

    repo = _make_repo(tmp_path / "repo")
    shutil.copy(PARAMS, repo / "params.yaml")  # the real file, not the tiny grid's safe_dump
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(
        [*git, "commit", "-qam", "the real params.yaml"], cwd=repo, env=_env(repo), check=True, capture_output=True
    )
    dvc(repo, "exp", "run", "--queue", "-S", "optim.lrs=[0.1]")
    queued = subprocess.run(
        ["git", "show", "refs/exps/celery/stash:params.yaml"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    old = PARAMS.read_text()
    assert yaml.safe_load(queued)["optim"]["lrs"] == [0.1]
    removed, added = changed_lines(old, queued)
    assert (
        removed
        and removed <= set(key_lines(old, ("optim", "lrs")))
        and not added - set(key_lines(queued, ("optim", "lrs")))
    ), diff_text(old, queued)
    assert (repo / "params.yaml").read_text() == old  # the queue left the workspace as it was
