"""Packaging (issue 20, item 7): what `pip install .` installs and where an installed normlab records.

The wheel is built from a copy of the checkout (pip wheel, no network: the venv's setuptools) and
unpacked into a folder standing for site-packages, which is what pip does with a pure-Python wheel;
normlab then runs from another folder with only that "site-packages" on its path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("pipeline", "benchmarks", "tests"):  # benchmarks/ and tests/ are there for find to skip
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(out)],
        check=True,
        capture_output=True,
        cwd=src,
    )
    (whl,) = out.glob("normlab-*.whl")
    return whl


def _metadata(whl: Path):
    with zipfile.ZipFile(whl) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(z.read(name).decode())


def test_the_wheel_installs_only_the_pipeline_package_and_the_licence(wheel):
    # fails if benchmarks/ or tests/ become top-level packages again, or LICENSE is left out
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert {n.split("/")[0] for n in names} == {"pipeline", "normlab-0.1.0.dist-info"}
    assert "normlab-0.1.0.dist-info/licenses/LICENSE" in names
    assert "pipeline/spec/extras.py" in names and "pipeline/spec/environment.py" in names


def test_the_metadata_has_a_licence_urls_and_ray_and_psycopg_only_as_extras(wheel):
    meta = _metadata(wheel)
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("Project-URL")
    requires = meta.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    assert not [r for r in core if r.startswith(("ray", "psycopg"))], core
    assert any(r.startswith("ray[default]") and 'extra == "ray"' in r for r in requires)
    assert any(r.startswith("psycopg[binary]") and 'extra == "server"' in r for r in requires)
    assert set(meta.get_all("Provides-Extra")) >= {"test", "ray", "server"}


def test_an_installed_normlab_records_in_the_working_folder_never_in_site_packages(wheel, tmp_path):
    # before the fix the store was sqlite:///<site-packages>/mlflow.db with mlruns/ beside it
    site, work = tmp_path / "site-packages", tmp_path / "work"
    work.mkdir()
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    code = (
        "import pipeline, json; from pipeline import cli; from pipeline.tracking.runs import connect, experiment_id\n"
        "uri = cli.store_uri(); client = connect(uri); eid = experiment_id(client, 'packaging', uri)\n"
        "print(json.dumps([pipeline.__file__, uri, client.get_experiment(eid).artifact_location]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    package, uri, artifacts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(package).resolve().is_relative_to(site.resolve())  # the installed copy ran, not the checkout
    assert uri == f"sqlite:///{work.resolve() / 'mlflow.db'}"
    assert (work / "mlflow.db").is_file()
    assert artifacts == (work.resolve() / "mlruns").as_uri()
    assert not [p for p in site.rglob("*") if p.name.startswith("mlflow.db") or p.name == "mlruns"]


def test_inside_the_checkout_the_store_stays_at_the_repository_root(monkeypatch, tmp_path):
    from pipeline.spec import environment

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # wherever the command is started from
    assert environment.is_checkout(ROOT) and environment.project_root() == ROOT
    assert environment.tracking_uri() == f"sqlite:///{ROOT / 'mlflow.db'}"


def test_ray_missing_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    from pipeline.executors import ExecutorError, RayExecutor
    from pipeline.executors.base import Options

    monkeypatch.setitem(sys.modules, "ray", None)  # as if `pip install normlab` without [ray]
    line = "--executor ray needs ray, which is not installed: pip install 'normlab[ray]'"
    options = Options(jobs=1, runs_dir=tmp_path / "runs")
    with pytest.raises(ExecutorError) as err:
        RayExecutor.check_store(options, "sqlite:///x.db")  # the grid's first call, before any cell
    assert str(err.value) == line
    with pytest.raises(ExecutorError) as err:
        RayExecutor.create(options)
    assert str(err.value) == line


def test_psycopg_missing_is_one_line_naming_the_extra_before_anything_starts(monkeypatch, tmp_path, capsys):
    from pipeline.tracking import server

    monkeypatch.setitem(sys.modules, "psycopg", None)
    assert server.main(["--folder", str(tmp_path / "srv")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "normlab: tracking server: the tracking server needs psycopg, which is not installed: "
        "pip install 'normlab[server]'"
    )
    assert not (tmp_path / "srv").exists()  # nothing created, no PostgreSQL started


def test_a_postgresql_store_without_psycopg_names_the_extra(monkeypatch):
    from pipeline.config import ConfigError
    from pipeline.tracking.runs import _probe_database

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError) as err:
        _probe_database("postgresql+psycopg://me:pw@127.0.0.1:1/mlflow")
    assert "pip install 'normlab[server]'" in str(err.value) and "\n" not in str(err.value)


def test_benchmarks_run_from_the_checkout(tmp_path):
    # benchmarks/ is no longer installed: it must still run as `python -m benchmarks.run` in the repository
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "python -m benchmarks.run" in proc.stdout, proc.stderr[-1000:]
