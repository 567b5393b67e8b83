"""The one owner of a cell's records: folder layout, names, schemas, atomic writes and reads.

A cell is one (variant, data set) of the grid; its outputs live in `runs/<variant>-<dataset>/`:
  history.parquet  one row per (member, step)
  summary.json     per member: lr, seed, outcome numbers, per-layer stats as a list
                   (the typed models of pipeline.spec.records: CellSummary, MemberSummary, LayerStats)
  config.json      the cell's resolved settings (what changes its outputs; tracking excluded)
  .normlab-cell    marker: this folder was written by normlab, so normlab may replace it
Run-specific facts (timings, MLflow run ids) go beside the folder in `<cell>.meta.json`,
outside what DVC hashes (.dvcignore), so the folder is the same bits on every run.

Training, tracking, the report and the benchmark read and write cells only through here, and
get typed records back (read_cell -> CellRecord whose summary is a CellSummary).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.spec.names import stage_name
from pipeline.spec.records import CellMeta, CellSummary, LayerStats, MemberSummary, layer_column  # noqa: F401

MARKER = ".normlab-cell"
FILES = ("history.parquet", "summary.json", "config.json")  # what a cell folder holds (and DVC hashes)


class RecordError(ValueError):
    """A missing, corrupt or foreign record: the message is the one line shown to the user."""


class WriteError(RecordError):
    """A cell's files could not be written (a full or read-only disk) while it ran: the one line shown.
    What was there before is left as it was; the training command exits 1 (not 2: nothing was wrong
    with what it was given)."""


def _write_failed(what: Path, exc: OSError) -> WriteError:
    remedy: dict[int | None, str] = {
        errno.ENOSPC: "free space on that disk",
        errno.EDQUOT: "free space within your disk quota",
        errno.EROFS: "give a folder on a writable disk",
        errno.EACCES: "give a folder you can write in",
    }
    do = remedy.get(exc.errno, "check that disk")
    reason = os.strerror(exc.errno) if exc.errno else _one_line(exc)  # pyarrow's OSErrors carry errno, no strerror
    return WriteError(f"cannot write {what} ({reason}): {do} and run the cell again")


@dataclass
class CellRecord:
    """A cell folder as read back: the typed summary, the history and config.json as a plain dict
    (the resolved CellSettings' JSON, tracking excluded: cell_config), all from one write, and
    the outputs hash of exactly the bytes they were parsed from (read_cell)."""

    folder: Path
    summary: CellSummary
    history: Any  # pandas.DataFrame
    config: dict
    outputs_hash: str | None = None


@dataclass
class CellRun:
    """What run_cell returns: the summary it wrote and the run's meta (timing, MLflow run ids)."""

    summary: CellSummary
    meta: CellMeta


def _one_line(exc: Exception) -> str:
    """A validation error as one line: the first problem's place and message (+ how many more)."""
    if isinstance(exc, ValidationError):
        errs = exc.errors()
        first = errs[0]
        where = ".".join(str(x) for x in first["loc"])
        msg = first["msg"]
        if msg.startswith("Value error, "):  # a validator's own message, `key: what` under its model
            msg = msg[len("Value error, ") :]
            key, sep, rest = msg.partition(": ")
            if sep and re.fullmatch(r"[\w.]+", key):
                where, msg = f"{where}.{key}" if where else key, rest
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        return f"{where or '(top level)'}: {msg}{more}"[:200]
    return str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__


def meta_path(folder: Path) -> Path:
    folder = Path(folder)
    return folder.parent / f"{folder.name}.meta.json"


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def cell_config(cell) -> dict:
    """What of a CellSettings changes the cell's outputs: everything but the tracking settings."""
    return cell.model_dump(mode="json", exclude={"tracking"})


def config_hash(cell_or_config) -> str:
    cfg = cell_or_config if isinstance(cell_or_config, dict) else cell_config(cell_or_config)
    return hashlib.sha256(_canonical(cfg)).hexdigest()[:16]


def outputs_hash(folder: Path) -> str:
    """A digest of what the cell folder holds: it names the run that produced these exact bytes."""
    return _digest({name: (Path(folder) / name).read_bytes() for name in FILES})


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode() + b"\0" + files[name])
    return h.hexdigest()[:20]


# -- writing -----------------------------------------------------------------------------
def is_cell_folder(path: Path) -> bool:
    return (Path(path) / MARKER).is_file()


def check_out(out: str | Path) -> Path:
    """Refuse an output path normlab did not create, before any work: it must be absent, or a
    folder carrying the cell marker; its parent must be writable."""
    out = Path(out)
    resolved = out.resolve()
    if out.is_symlink():
        raise RecordError(f"--out {out}: is a symbolic link; give a new folder or a normlab cell folder")
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents or resolved == Path("/"):
        raise RecordError(f"--out {out}: is the working directory or one above it; give a new folder")
    if out.exists():
        if not out.is_dir():
            raise RecordError(f"--out {out}: is an existing file; give a new folder or a normlab cell folder")
        if not is_cell_folder(out):
            raise RecordError(
                f"--out {out}: is an existing folder that normlab did not create (no {MARKER} "
                "marker); refusing to replace it: give a new folder"
            )
    parent = resolved.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.probe-"):
            pass
    except OSError as exc:
        raise RecordError(f"--out {out}: cannot write in {parent} ({exc.strerror or exc})") from None
    return out


def _json_default(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(type(o))


def _private_tmpdir(out: Path) -> Path:
    """A temp folder beside `out` once resolved (so on its filesystem even when a folder above is a
    symbolic link: renames stay renames), with the permissions a plain mkdir would give (mkdtemp: 0700)."""
    target = Path(out).resolve()
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished folder `tmp` (rename), then drop the old one. If the second
    rename fails, the old folder is put back: nothing is left under a `.old-` name."""
    out = Path(out).resolve()
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    moved = False
    if out.exists():
        out.rename(old)
        moved = True
    try:
        tmp.rename(out)
    except BaseException:
        if moved:
            old.rename(out)
        raise
    if moved:
        shutil.rmtree(old)


def write_cell(out: str | Path, history, summary: CellSummary | dict, config: dict) -> None:
    """Write the three files and the marker into a temp folder beside `out`, then swap it in whole."""
    commit_cell(stage_cell(out, history, summary, config), out)


def stage_cell(out: str | Path, history, summary: CellSummary | dict, config: dict) -> Path:
    """The cell's three files and its marker, complete, in a new temp folder beside `out`; `out`
    itself is not touched until commit_cell (run_cell first closes the cell's MLflow runs: a cell
    whose records failed is discarded, never left in `out` looking complete). `out` was checked by
    check_out(): absent or a normlab cell folder. The summary is validated (again, if it is a model:
    it may have been built without validation or changed since) before anything is written: a
    RecordError naming summary.json if it breaks the schema."""
    out = Path(out)
    raw = summary.model_dump() if isinstance(summary, BaseModel) else summary
    try:
        summary = CellSummary.model_validate(raw)
    except ValidationError as exc:
        raise RecordError(f"{out / 'summary.json'}: refused, breaks the schema ({_one_line(exc)})") from None
    try:
        tmp = _private_tmpdir(out)
    except OSError as exc:
        raise _write_failed(Path(out).resolve().parent, exc) from None
    try:
        history.to_parquet(tmp / "history.parquet", index=False)
        (tmp / "summary.json").write_text(json.dumps(summary.model_dump(), indent=2, allow_nan=True))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        (tmp / MARKER).write_text(json.dumps({"written_by": "normlab", "cell": summary.cell}) + "\n")
        _check_still_ours(out)
    except OSError as exc:  # pyarrow's write errors are OSErrors too
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_failed(Path(out).resolve().parent, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _check_still_ours(out: Path) -> None:
    if out.exists() and not is_cell_folder(out):  # re-checked: it may have appeared since check_out
        raise RecordError(f"--out {out}: appeared during training and is not a normlab cell folder")


def commit_cell(staged: Path, out: str | Path) -> None:
    """Swap the folder stage_cell made in as `out`, whole (the temp folder is gone either way)."""
    out = Path(out)
    try:
        _check_still_ours(out)
        _swap_in(staged, out)
    except BaseException:
        discard_staged(staged)
        raise


def discard_staged(staged: Path) -> None:
    """Drop a folder stage_cell made (ours: a `.<cell>.tmp-*` beside the cell)."""
    shutil.rmtree(staged, ignore_errors=True)


def write_meta(folder: Path, meta: CellMeta | dict) -> None:
    meta = meta.model_dump() if isinstance(meta, BaseModel) else meta
    CellMeta.model_validate(meta)
    path = meta_path(folder)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(meta, indent=2, default=_json_default))
        tmp.replace(path)
    except OSError as exc:  # no half-written file, and no earlier meta file beside other outputs
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        raise _write_failed(path, exc) from None


def write_tree_atomically(out: Path, build: Callable[[Path], None], marker: str | None = None) -> None:
    """Build a folder's entries in a temp folder beside `out`; only if `build` succeeds, replace
    each entry it made (and only those) in `out`, all of them or none (_replace_all). Other entries
    of `out` are left alone. An entry that is a symbolic link in `out` (tables/ kept on another
    disk) stays a link: what it points to is replaced. With `marker` (REPORT_MARKER), `out` must be
    one normlab made (check_report_out, re-checked here) and keeps the marker."""
    out = Path(out)
    if marker:
        check_report_out(out, marker=marker)
    out.mkdir(parents=True, exist_ok=True)
    tmp = _private_tmpdir(out)
    elsewhere: list[Path] = []  # temp folders beside link targets on other filesystems
    try:
        build(tmp)
        if marker:
            (tmp / marker).write_text(json.dumps({"written_by": "normlab"}) + "\n")
        moves = []
        for entry in sorted(tmp.iterdir()):
            dest = out.resolve() / entry.name
            if dest.is_symlink():
                dest = dest.resolve()  # the link's target gets the entry; the link stays
            if os.stat(entry).st_dev != os.stat(dest.parent).st_dev:  # copied beside it first: renames stay renames
                elsewhere.append(_private_tmpdir(dest))
                moved = elsewhere[-1] / entry.name
                if entry.is_dir():
                    shutil.copytree(entry, moved, symlinks=True)
                else:
                    shutil.copy2(entry, moved)
                entry = moved
            moves.append((entry, dest))
        _replace_all(moves)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for side in elsewhere:
            shutil.rmtree(side, ignore_errors=True)


def _drop(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _replace_all(moves: list[tuple[Path, Path]]) -> None:
    """Rename each `src` over its `dest` (same filesystem), all or none: every replaced `dest` is kept
    aside (`.<name>.old-<pid>`: a hard link for a file, which is then replaced atomically; a rename
    for a folder) until all are in. If one fails, those already in are taken out and the old ones
    put back, in reverse order, then the error is raised; nothing is left under an `.old-` name."""
    done: list[tuple[Path, Path | None]] = []  # (dest, its old entry aside, or None)
    aside: Path | None
    try:
        for src, dest in moves:
            aside = dest.parent / f".{dest.name}.old-{os.getpid()}"
            if os.path.lexists(dest):
                if dest.is_dir() and not dest.is_symlink():
                    os.rename(dest, aside)
                    done.append((dest, aside))
                    os.rename(src, dest)
                    continue
                try:
                    os.link(dest, aside, follow_symlinks=False)
                except OSError:  # a filesystem without hard links
                    shutil.copy2(dest, aside, follow_symlinks=False)
            else:
                aside = None
            done.append((dest, aside))
            os.replace(src, dest)
    except BaseException:
        for dest, aside in reversed(done):
            if aside is None:  # a new entry: taken out if it went in
                if os.path.lexists(dest):
                    _drop(dest)
            elif os.path.isdir(aside) and not os.path.islink(aside):
                if os.path.lexists(dest):  # the new folder is in: out of the way, then dropped
                    trash = dest.parent / f".{dest.name}.new-{os.getpid()}"
                    os.rename(dest, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                os.rename(aside, dest)
            else:
                os.replace(aside, dest)  # the old file back, atomically
        raise
    for _, aside in done:
        if aside is not None:
            _drop(aside)


REPORT_MARKER = ".normlab-report"  # a report folder normlab made: it may replace the report's entries in it


def check_report_out(out: str | Path, flag: str = "--out", marker: str = REPORT_MARKER) -> Path:
    """Refuse, before any work, a report folder normlab did not make: it must be absent, empty, or
    carry the report marker. Any other content means the folder is someone's own (the report
    replaces whole entries like figures/ and tables/ in it), so it is refused as a whole."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise RecordError(f"{flag} {out}: is an existing file; give a new folder or a normlab report folder")
        if not (out / marker).is_file() and any(out.iterdir()):
            raise RecordError(
                f"{flag} {out}: is an existing folder that normlab did not create (no {marker} "
                "marker); refusing to replace anything in it: give a new or empty folder (if an older normlab "
                f"wrote it: touch {out / marker})"
            )
    return out


def claim_report_out(out: str | Path, flag: str = "--out") -> Path:
    """check_report_out, then make the folder (if new) and put the marker in it."""
    out = check_report_out(out, flag)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / REPORT_MARKER).is_file():
        (out / REPORT_MARKER).write_text(json.dumps({"written_by": "normlab"}) + "\n")
    return out


# -- reading -----------------------------------------------------------------------------
def read_summary(folder: Path) -> CellSummary:
    """summary.json alone (read_cell reads a whole cell as one snapshot)."""
    path = Path(folder) / "summary.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecordError(f"{path}: missing (re-run the cell: dvc repro {stage_name(Path(folder).name)})") from None
    return _parse_summary(raw, path, folder)


SNAPSHOT_TRIES = 50  # reads of a cell that changed while being read, before giving up with one line


class _Changed(Exception):
    """The folder changed while it was being read: read it again."""


def _snapshot(folder: Path) -> dict[str, bytes]:
    """The bytes of FILES as one consistent snapshot of `folder`.

    What it guarantees: the files are opened through one handle on the folder, so they come from one
    directory; normlab writes a cell only by building a new folder and renaming it over the old one
    (write_cell), so one directory is one write, and a rename during the read cannot mix two. After
    reading, the folder's path must still name that directory, each file's name the file read, and
    the directory must be unmodified since it was opened (its mtime: a file replaced by rename inside
    it, as `dvc checkout` does one by one, changes it); otherwise the read starts again (up to
    SNAPSHOT_TRIES times, then RecordError). It does not see a file rewritten in place (nothing
    normlab or DVC does), nor two in-folder renames within one tick of the file system's clock."""
    for _ in range(SNAPSHOT_TRIES):
        try:
            return _read_once(folder)
        except _Changed:
            continue
    raise RecordError(
        f"{folder}: changed {SNAPSHOT_TRIES} times while being read (a cell is being written "
        "there?); read it again when the grid is done"
    )


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_once(folder: Path) -> dict[str, bytes]:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        dfd = os.open(folder, flags)
    except FileNotFoundError:
        if folder.parent.is_dir() and any(folder.parent.glob(f".{folder.name}.old-*")):
            raise _Changed from None  # between the two renames of a swap: the new folder is a moment away
        raise
    fds: dict[str, int] = {}
    try:
        before = os.fstat(dfd)
        for name in FILES:
            try:
                fds[name] = os.open(name, os.O_RDONLY, dir_fd=dfd)
            except FileNotFoundError:
                if _moved(folder, before):
                    raise _Changed from None  # the folder was replaced (and the old one emptied) meanwhile
                raise FileNotFoundError(2, "No such file or directory", str(folder / name)) from None
        data = {}
        for name, fd in fds.items():
            with os.fdopen(os.dup(fd), "rb") as fh:
                data[name] = fh.read()
        if _moved(folder, before) or os.fstat(dfd).st_mtime_ns != before.st_mtime_ns:
            raise _Changed
        for name, fd in fds.items():
            try:
                now = os.stat(name, dir_fd=dfd)
            except FileNotFoundError:
                raise _Changed from None
            if not _same(now, os.fstat(fd)):
                raise _Changed
        return data
    finally:
        for fd in fds.values():
            os.close(fd)
        os.close(dfd)


def _moved(folder: Path, opened: os.stat_result) -> bool:
    try:
        return not _same(os.stat(folder), opened)
    except FileNotFoundError:
        return True


def _parse_summary(raw: bytes, path: Path, folder: Path) -> CellSummary:
    try:
        return CellSummary.model_validate(json.loads(raw))
    except ValueError as exc:  # ValidationError is one; so are JSON and UTF-8 errors
        raise RecordError(
            f"{path}: corrupt ({_one_line(exc)}); re-run the cell: dvc repro -f {stage_name(Path(folder).name)}"
        ) from None


def read_cell(folder: str | Path) -> CellRecord:
    """The cell's summary, history and config as one consistent snapshot (_snapshot says what that
    guarantees), with the outputs hash of the bytes read; RecordError, one line naming the file, for a
    missing or corrupt one."""
    import io

    import pandas as pd

    folder = Path(folder)
    try:
        files = _snapshot(folder)
    except FileNotFoundError as exc:
        missing = Path(exc.filename) if exc.filename and Path(exc.filename) != folder else folder / "summary.json"
        raise RecordError(f"{missing}: missing (re-run the cell: dvc repro {stage_name(folder.name)})") from None
    except OSError as exc:
        raise RecordError(f"{folder}: cannot be read ({exc.strerror or exc})") from None
    summary = _parse_summary(files["summary.json"], folder / "summary.json", folder)
    path = folder / "history.parquet"
    try:
        history = pd.read_parquet(io.BytesIO(files["history.parquet"]))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise RecordError(
            f"{path}: corrupt ({_one_line(exc)}); re-run the cell: dvc repro -f {stage_name(folder.name)}"
        ) from None
    try:
        config = json.loads(files["config.json"])
    except ValueError as exc:
        raise RecordError(f"{folder / 'config.json'}: missing or corrupt ({_one_line(exc)})") from None
    return CellRecord(folder, summary, history, config, _digest(files))


def read_meta(folder: Path) -> dict | None:
    path = meta_path(folder)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
