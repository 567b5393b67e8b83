"""One owner for each name, and data that flows one way (issue 16).

    .venv/bin/python -m pytest -q tests/test_ownership.py

Names (cells, stages, MLflow runs) come from pipeline.spec.names; the no-telemetry environment and
the tracking-URI rule from pipeline.spec.environment; the cell (pipeline.cell) knows nothing of how
it was launched, and the warm server runs it without the training command; pipeline.grid drives
executors through the Executor protocol only; pipeline.compare reads a study without its runner.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline.spec import environment, names

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (absolute imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _code_strings(path: Path) -> list[str]:
    """The string constants of a file that are not docstrings (what the code actually uses)."""
    tree = ast.parse(path.read_text())
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def _sources(*folders: str) -> list[Path]:
    return [p for f in folders for p in sorted((ROOT / f).rglob("*.py"))]


# -- names -----------------------------------------------------------------------------------------
def test_names_round_trip_and_the_settings_use_them():
    from tests.conftest import make_cell

    assert names.cell_name("bn", "synthetic") == "bn-synthetic" == make_cell("bn").name
    assert names.stage_name("bn-synthetic") == "train@bn-synthetic"
    assert names.cell_of_stage(names.stage_name("bn-synthetic")) == "bn-synthetic"
    assert names.cell_of_stage("report") is None and names.cell_of_stage("other@x") is None
    assert names.parent_run_name("bn-synthetic") == "bn-synthetic"
    assert names.member_run_name("bn-synthetic", 0.1, 3) == "bn-synthetic lr=0.1 seed=3"


def test_no_module_spells_a_stage_or_run_name_itself():
    for path in _sources("pipeline", "benchmarks"):
        if path == ROOT / "pipeline" / "spec" / "names.py":
            continue
        code = path.read_text()
        assert 'f"train@' not in code and "'train@" not in code, path
        assert " lr={lr} seed={seed}" not in code, path
        assert 'f"{v}-{d}"' not in code and 'f"{variant}-{dataset}"' not in code, path
    from pipeline import records

    assert not hasattr(records, "cell_name")  # one owner: pipeline.spec.names


# -- the environment --------------------------------------------------------------------------------
def test_no_module_sets_a_telemetry_variable_itself():
    """The variables are named in code only by their owner (documentation may mention them)."""
    for path in _sources("pipeline", "benchmarks", "scripts", "tests"):
        if path in (ROOT / "pipeline" / "spec" / "environment.py", Path(__file__)):
            continue
        used = set(_code_strings(path)) & set(environment.NO_TELEMETRY)
        if path.name == "test_ecosystem.py":  # the user's opt-in, spelled as a user would
            used -= {"MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}
        assert not used, f"{path.relative_to(ROOT)} sets {sorted(used)}: use pipeline.spec.environment"
        assert "core.analytics" not in path.read_text(), path


def test_the_owner_decides_what_every_child_gets(monkeypatch):
    """Change the owner's table: a worker's environment and a child process follow, and a choice
    the user made first is kept."""
    from pipeline.executors import worker_env

    monkeypatch.setitem(environment.NO_TELEMETRY, "NORMLAB_TEST_NO_TELEMETRY", "yes")
    monkeypatch.delenv("NORMLAB_TEST_NO_TELEMETRY", raising=False)
    assert worker_env()["NORMLAB_TEST_NO_TELEMETRY"] == "yes" and worker_env()["NORMLAB_WARM"] == "0"
    env = environment.child_env({"PATH": os.environ["PATH"], "DO_NOT_TRACK": "false"})
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; print(os.environ['NORMLAB_TEST_NO_TELEMETRY'], "
            "os.environ['DO_NOT_TRACK'], os.environ['MLFLOW_DISABLE_TELEMETRY'])",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["yes", "false", "true"]


def test_the_tracking_uri_rule_has_one_owner(monkeypatch, tmp_path):
    from pipeline import cli
    from pipeline.tracking import runs as tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli.store_uri() == tracking.tracking_uri() == f"sqlite:///{ROOT / 'mlflow.db'}"
    assert environment.default_store(tmp_path / ".dvc" / "tmp" / "exps" / "x") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert cli.store_uri() == tracking.tracking_uri() == "http://127.0.0.1:9"
    for path in _sources("pipeline"):
        if path != ROOT / "pipeline" / "spec" / "environment.py":
            assert not any(
                "mlflow.db'" in s or s.endswith("mlflow.db") and s.startswith("sqlite") for s in _code_strings(path)
            ), path


# -- the cell and how it is launched ----------------------------------------------------------------
def test_the_cell_does_not_know_how_it_was_launched():
    cell = _imports(ROOT / "pipeline" / "cell.py")
    assert not {m for m in cell if m.startswith(("pipeline.train", "pipeline.warm"))}
    server = _imports(ROOT / "pipeline" / "warm" / "server.py")
    assert not {m for m in server if m.startswith("pipeline.train")}
    for path in _sources("pipeline", "benchmarks", "tests"):  # run_cell's callers import it from the cell
        assert "pipeline.train.run_cell" not in _imports(path), path


def test_the_warm_server_runs_the_cell_module_not_the_training_command(tmp_path):
    """A forked child (warm_server._child, as the server forks it) gets the request's Launch and
    hands it to pipeline.cell.launch; pipeline.train is never imported on the server's side."""
    probe = textwrap.dedent(f"""
        import os, sys
        import pipeline.warm.server as ws
        assert "pipeline.train" not in sys.modules
        req = {{"op": "run", "module": "pipeline.cell", "argv": ["caller-argv0", "x"], "cwd": {str(tmp_path)!r},
               "umask": 0o22, "env": {{"PATH": os.environ["PATH"]}},
               "launch": {{"variant": "bn", "dataset": "synthetic", "out": "o", "params": "p.yaml", "no_track": True}}}}
        assert ws._invalid(req, [0, 1, 2]) is None, ws._invalid(req, [0, 1, 2])
        assert ws._invalid({{**req, "launch": {{"argv": ["--help"]}}}}, [0, 1, 2]).startswith("malformed")
        def spy(launch):
            print("launch", launch, sys.argv, os.getcwd(), "pipeline.train" in sys.modules, flush=True)
            return 7
        ws.launch = spy
        pid = os.fork()
        if pid == 0:
            os._exit(ws._child(req, [os.dup(0), os.dup(1), os.dup(2)], os.getppid()))
        print("exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
        """)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, last = out.stdout.strip().splitlines()
    assert first == (
        f"launch Launch(variant='bn', dataset='synthetic', out='o', params='p.yaml', no_track=True) "
        f"['caller-argv0', 'x'] {tmp_path} False"
    )
    assert last == "exit 7"


def test_the_training_command_parses_then_hands_the_cell_on(monkeypatch):
    from pipeline import train

    seen = []
    monkeypatch.setattr("pipeline.warm.client.run_warm", lambda launch: seen.append(("warm", launch)) or None)
    monkeypatch.setattr(train, "launch", lambda req: seen.append(("cold", req)) or 0)
    assert train.main(["--variant", "bn", "--dataset", "synthetic", "--out", "o", "--no-track"]) == 0
    launch = {"variant": "bn", "dataset": "synthetic", "out": "o", "params": "params.yaml", "no_track": True}
    assert seen[0] == ("warm", launch)
    assert seen[1][0] == "cold" and seen[1][1].to_json() == launch


# -- executors --------------------------------------------------------------------------------------
def test_both_executors_satisfy_the_protocol_and_the_grid_uses_nothing_else():
    from pipeline.executors import EXECUTORS, Executor, ExecutorKind, LocalExecutor, RayExecutor

    assert EXECUTORS == {"local": LocalExecutor, "ray": RayExecutor}
    for cls in (LocalExecutor, RayExecutor):
        assert isinstance(cls, ExecutorKind), cls
    local = LocalExecutor(1)
    assert isinstance(local, Executor)
    ray = object.__new__(RayExecutor)  # without joining a cluster: its __init__ sets slots
    ray.slots = 1
    assert isinstance(ray, Executor)
    grid = (ROOT / "pipeline" / "grid.py").read_text()
    assert "isinstance" not in grid and "RayExecutor" not in grid and "LocalExecutor" not in grid
    compared = {
        c.value
        for n in ast.walk(ast.parse(grid))
        if isinstance(n, ast.Compare)
        for c in ast.walk(n)
        if isinstance(c, ast.Constant)
    }
    assert not compared & set(EXECUTORS)  # no branch on an executor's name (its default is "local")


def test_executors_check_their_own_preconditions():
    from pipeline.executors import ExecutorError, LocalExecutor, Options, RayExecutor

    opts = Options(jobs=1, address="10.0.0.1:6379")
    with pytest.raises(ExecutorError, match="needs a tracking server every node reaches"):
        RayExecutor.check_store(opts, "sqlite:///x.db")
    RayExecutor.check_store(opts, "http://10.0.0.1:5000")
    LocalExecutor.check_store(opts, "sqlite:///x.db")


# -- studies ----------------------------------------------------------------------------------------
def test_compare_reads_a_study_without_its_runner(tmp_path):
    assert not {
        m
        for m in _imports(ROOT / "pipeline" / "compare.py")
        if m.startswith("pipeline.study") and not m.startswith("pipeline.study_file")
    }
    study = tmp_path / "s.yaml"
    study.write_text(f"params: {ROOT / 'params.yaml'}\nsetups:\n  a: {{}}\n")
    code = (
        "import sys; import pipeline.compare as c\n"
        f"try:\n    c.main(['--study', {str(study)!r}, '--reports', {str(tmp_path / 'r')!r}])\n"
        "except SystemExit as e:\n    print(e.code, 'pipeline.study' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False"], out.stdout + out.stderr
    assert "no setup report found" in out.stderr


def test_the_orphan_sweep_reads_process_fields_not_a_joined_string():
    from pipeline.tracking.runs import ProcessId, _process_gone

    me = ProcessId.current()
    tags = me.tags("normlab.proc")
    assert ProcessId.from_tags(tags, "normlab.proc") == me and not _process_gone(me)  # alive
    reused = ProcessId.from_tags({**tags, "normlab.proc.start": "1"}, "normlab.proc")  # same pid, other start
    assert reused is not None and _process_gone(reused)
    # the display text alone is never parsed back: without the fields the sweep leaves the run alone
    assert ProcessId.from_tags({"normlab.proc": tags["normlab.proc"]}, "normlab.proc") is None
    assert not _process_gone(None)


def test_the_makefile_exports_the_owners_telemetry_switches():
    exports = dict(re.findall(r"^export (\w+) \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M))
    assert {k: exports.get(k) for k in environment.NO_TELEMETRY} == environment.NO_TELEMETRY


def _pipeline_imports(path: Path) -> set[str]:
    """Every pipeline module a file imports, at any depth of its code (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pipeline")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pipeline import records`
    return found


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def test_the_report_stage_lists_every_module_it_imports():
    """dvc.yaml's report deps cover the import closure of `python -m pipeline.report` (a module the
    report runs but DVC does not watch would change the report unseen)."""
    deps = [ROOT / d for d in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["deps"]]
    todo, seen = [ROOT / "pipeline" / "report" / "__main__.py"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _pipeline_imports(path):
            parts = name.split(".")
            for i in range(2, len(parts) + 1):  # a package's __init__ runs on the way to its modules
                f = _module_file(".".join(parts[:i]))
                if f is not None:
                    todo.append(f)
    assert len(seen) > 10
    unwatched = sorted(str(p.relative_to(ROOT)) for p in seen if not any(p == d or d in p.parents for d in deps))
    assert unwatched == []
