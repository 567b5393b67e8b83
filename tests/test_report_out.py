"""Report folders: someone's own folder given as --out / --report / --reports is refused before any
work (exit 2, one line, untouched); a folder normlab made carries .normlab-report and is reused;
the swap stays on the target's filesystem and never leaves a `.old-` folder behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import compare, grid, records
from pipeline.report import cli
from tests.conftest import BASE, merge
from tests.test_report import TINY, trained  # noqa: F401  (the module-scoped tiny trained grid)

ROOT = Path(__file__).resolve().parents[1]


def _user_folder(path: Path) -> dict[str, bytes]:
    (path / "figures").mkdir(parents=True)
    (path / "tables").mkdir()
    (path / "figures" / "IMG_0001.jpg").write_bytes(b"\xff\xd8 my holiday")
    (path / "tables" / "results.csv").write_text("mine,1\n")
    (path / "report.md").write_text("my own notes\n")
    return _snap(path)


def _snap(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, call, folder: Path, before: dict) -> None:
    with pytest.raises(SystemExit) as exc:
        call()
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("normlab")]
    assert len(err) == 1 and str(folder) in err[0] and records.REPORT_MARKER in err[0], err
    assert _snap(folder) == before
    assert not (folder / records.REPORT_MARKER).exists()


def _params(tmp_path: Path) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(merge(BASE, TINY), sort_keys=False))
    return p


def test_report_out_on_a_users_folder_is_refused_untouched(trained, tmp_path, capsys):  # noqa: F811
    mine = tmp_path / "mine"  # real records: the old code wrote its report over these, exit 0
    before = _user_folder(mine)
    _refused(capsys, lambda: _report(trained, mine), mine, before)


def test_grid_report_on_a_users_folder_is_refused_before_any_cell(tmp_path, capsys):
    mine = tmp_path / "mine"
    before = _user_folder(mine)
    _refused(
        capsys,
        lambda: grid.main(
            [
                "--params",
                str(_params(tmp_path)),
                "--runs",
                str(tmp_path / "cells"),
                "--report",
                str(mine),
                "--jobs",
                "1",
            ]
        ),
        mine,
        before,
    )
    assert not (tmp_path / "cells").exists() or not any((tmp_path / "cells").iterdir())


def test_compare_reports_on_a_users_folder_is_refused_untouched(trained, tmp_path, capsys):  # noqa: F811
    study = tmp_path / "s.yaml"
    study.write_text(f"params: {ROOT}/params.yaml\nsetups:\n  a: {{}}\n")
    mine = tmp_path / "mine"
    _user_folder(mine)
    assert _report(trained, mine / "a") == 0  # a setup's report in it: the old code compared and wrote over
    before = _snap(mine)
    _refused(capsys, lambda: compare.main(["--study", str(study), "--reports", str(mine)]), mine, before)


def _report(root: Path, out: Path) -> int:
    return cli.main(
        ["--runs", str(root / "runs"), "--out", str(out), "--params", str(root / "params.yaml"), "--no-track"]
    )


def test_a_fresh_folder_gets_the_marker_and_is_reused(trained, tmp_path):  # noqa: F811
    out = tmp_path / "new" / "rep"
    assert _report(trained, out) == 0
    assert (out / records.REPORT_MARKER).is_file() and (out / "report.md").is_file()
    (out / "notes.txt").write_text("kept")
    assert _report(trained, out) == 0  # a second report into it
    assert (out / "notes.txt").read_text() == "kept"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _report(trained, empty) == 0 and (empty / records.REPORT_MARKER).is_file()


def test_reports_as_a_symlink_works_and_leaves_no_old_or_tmp_entries(trained, tmp_path):  # noqa: F811
    elsewhere = tmp_path / "disk2" / "reports"
    elsewhere.mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "reports").symlink_to(elsewhere)
    seen = []
    real = records._private_tmpdir
    records_tmp = lambda out: seen.append(real(out)) or seen[-1]  # noqa: E731
    mp = pytest.MonkeyPatch()
    mp.setattr(records, "_private_tmpdir", records_tmp)
    try:
        assert _report(trained, work / "reports") == 0
        assert _report(trained, work / "reports") == 0  # the second one swaps folders in
    finally:
        mp.undo()
    assert seen and all(t.parent == elsewhere.parent for t in seen)  # beside the resolved target
    assert (elsewhere / "report.md").is_file() and (elsewhere / records.REPORT_MARKER).is_file()
    for folder in (work, elsewhere, elsewhere.parent):
        assert [p.name for p in folder.iterdir() if ".old-" in p.name or ".tmp-" in p.name] == []


def test_swap_in_puts_the_old_folder_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    out, new = tmp_path / "figures", tmp_path / "new"
    out.mkdir()
    (out / "a.png").write_text("old")
    new.mkdir()
    (new / "a.png").write_text("new")
    real, calls = Path.rename, []

    def flaky(self, target):
        calls.append(self)
        if len(calls) == 2:
            raise OSError(18, "Invalid cross-device link")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", flaky)
    with pytest.raises(OSError):
        records._swap_in(new, out)
    monkeypatch.undo()
    assert (out / "a.png").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if ".old-" in p.name] == []


# -- issue 18 item 7: reports/ on another filesystem (a real one: a tmpfs root mounts), tables/ a link ---
@pytest.fixture
def two_disks(tmp_path):
    import subprocess

    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    disks = [tmp_path / "disk1", tmp_path / "disk2"]
    mounted = []
    try:
        for d in disks:
            d.mkdir()
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(d)], capture_output=True, text=True
            )
            if r.returncode:
                pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
            mounted.append(d)
        assert len({os.stat(d).st_dev for d in [tmp_path, *disks]}) == 3
        yield disks
    finally:
        for d in mounted:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _leftovers(*folders: Path) -> list[str]:
    return [str(p) for f in folders for p in f.rglob("*") if ".old-" in p.name or ".tmp-" in p.name]


@pytest.mark.parametrize("tables", ["folder", "link"])
def test_a_failing_report_on_another_filesystem_keeps_the_old_one(
    trained,
    tmp_path,
    two_disks,
    monkeypatch,  # noqa: F811
    tables,
):
    """reports/ a link to another filesystem, and its tables/ a link to a third: a report goes in whole
    (through the links), and one that fails at its last replacement leaves the previous one as it was,
    with no hidden `.figures.old-*` anywhere. Before: the old figures/ left as .figures.old-<pid>, and
    with tables a link the report ended half-replaced."""
    disk1, disk2 = two_disks
    work = tmp_path / "work"
    work.mkdir()
    (disk1 / "reports").mkdir()
    (work / "reports").symlink_to(disk1 / "reports")
    assert _report(trained, work / "reports") == 0
    held = disk1 / "reports" / "tables"
    if tables == "link":
        shutil.move(str(held), str(disk2 / "tables"))
        held.symlink_to(disk2 / "tables")
        held = disk2 / "tables"
    (held / "stale.csv").write_text("a table the report no longer writes\n")
    assert _report(trained, work / "reports") == 0  # a second report, through the links
    assert (disk1 / "reports" / "tables").is_symlink() == (tables == "link")  # a user's link is kept
    assert not (held / "stale.csv").exists() and (held / "members.csv").is_file()
    assert _leftovers(work, disk1, disk2) == []
    before = _snap(disk1 / "reports") | {f"tables/{k}": v for k, v in _snap(held).items()}

    def fails_at_tables(real):  # the last entry to go in cannot (a device error, a full disk)
        def call(src, dst, *a, **kw):
            if "tables" in (Path(src).name, Path(dst).name):
                raise OSError(28, "No space left on device")
            return real(src, dst, *a, **kw)

        return call

    monkeypatch.setattr(os, "rename", fails_at_tables(os.rename))  # Path.rename and .replace call these
    monkeypatch.setattr(os, "replace", fails_at_tables(os.replace))
    other = tmp_path / "other.yaml"  # a report that differs from the one in place: one cell fewer
    fewer = {**TINY, "grid": {**TINY["grid"], "variants": TINY["grid"]["variants"][:-1]}}
    other.write_text(yaml.safe_dump(merge(BASE, fewer), sort_keys=False))
    with pytest.raises(OSError):
        cli.main(
            ["--runs", str(trained / "runs"), "--out", str(work / "reports"), "--params", str(other), "--no-track"]
        )
    monkeypatch.undo()
    after = _snap(disk1 / "reports") | {f"tables/{k}": v for k, v in _snap(held).items()}
    assert after == before
    assert _leftovers(work, disk1, disk2) == []
