"""Image data offline: tiny files written in the real on-disk formats (IDX, raw and gzipped;
CIFAR-10's pickled batches) in torchvision's folder layout, read by the real loading code;
each missing or damaged file is one line naming the fetch command; fetch_data's offline
parts (checksums, "already there", a mirror's wrong bytes, a hostile archive)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pandas as pd
import pytest

from pipeline.cell import run_cell
from pipeline.config import ConfigError, DatasetSettings
from pipeline.data import fetch as fetch_data
from pipeline.data.images import load_images
from pipeline.data.sets import StackedDataModule, load_arrays, preflight
from tests.conftest import make_cell

N_TRAIN, N_TEST = 30, 12


def write_idx(path, arr: np.ndarray, gz: bool = False) -> None:
    """The IDX format: 0, 0, type 0x08 (unsigned byte), ndim; big-endian uint32 sizes; bytes."""
    raw = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes() + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def make_mnist(root, folder="MNIST", gz=False, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", y, gz)
        out[prefix] = (x, y)
    return out


def make_cifar(root, per_batch=4, names=None, str_keys=False):
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names or [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        keys = ("data", "labels") if str_keys else (b"data", b"labels")
        blob = pickle.dumps({keys[0]: data, keys[1]: labels, b"batch_label": b"x"}, protocol=2)
        if str_keys:  # as the official files name it (pickled by numpy 1.x): numpy.core, not numpy._core
            blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(blob)
        out[name] = (data, labels)
    return out


def _cfg(kind, root, **kw):
    return DatasetSettings(kind=kind, root=str(root), **kw)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("kind,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_idx_sets_load_in_torchvisions_layout(tmp_path, kind, folder, gz):
    files = make_mnist(tmp_path, folder, gz)
    x, y, xt, yt = load_images(_cfg(kind, tmp_path), "datasets.m", test=True)
    assert x.shape == (N_TRAIN, 1, 28, 28) and x.dtype == np.float32 and xt.shape == (N_TEST, 1, 28, 28)
    np.testing.assert_array_equal(x[:, 0], files["train"][0] / np.float32(255.0))
    np.testing.assert_array_equal(y, files["train"][1])
    np.testing.assert_array_equal(yt, files["t10k"][1])


@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar_batches_load_channel_major(tmp_path, str_keys):
    files = make_cifar(tmp_path, str_keys=str_keys)
    x, y, xt, yt = load_images(_cfg("cifar10", tmp_path), "datasets.c", test=True)
    assert x.shape == (20, 3, 32, 32) and xt.shape == (4, 3, 32, 32)
    data, labels = files["data_batch_2"]
    np.testing.assert_array_equal(x[4:8], data.reshape(4, 3, 32, 32) / np.float32(255.0))
    assert list(y[4:8]) == labels and list(yt) == files["test_batch"][1]


def test_subset_takes_the_first_examples_and_reads_only_the_batches_it_needs(tmp_path):
    files = make_cifar(tmp_path, names=["data_batch_1", "data_batch_2"])  # batches 3-5 absent
    x, y = load_images(_cfg("cifar10", tmp_path, subset=6), "datasets.c")
    assert len(x) == 6 and list(y) == files["data_batch_1"][1] + files["data_batch_2"][1][:2]
    with pytest.raises(ConfigError, match="missing .*data_batch_3"):
        load_images(_cfg("cifar10", tmp_path, subset=9), "datasets.c")


def test_digits_images_are_sklearns_digits_as_1x8x8():
    from sklearn.datasets import load_digits

    x, y = load_arrays(DatasetSettings(kind="digits_images"))
    assert x.shape == (1797, 1, 8, 8)
    np.testing.assert_array_equal(x.reshape(1797, 64), load_digits().data.astype(np.float32) / np.float32(16.0))
    np.testing.assert_array_equal(y, load_digits().target)


def test_val_from_test_uses_the_official_test_split(tmp_path):
    files = make_mnist(tmp_path)
    dm = StackedDataModule(_cfg("mnist", tmp_path, val_from="test"), [0], 4, 3, flatten=True)
    dm.setup()
    assert dm.x_train.shape == (N_TRAIN, 784) and dm.x_val.shape == (N_TEST, 784)
    np.testing.assert_array_equal(dm.y_val.numpy(), files["t10k"][1])
    assert dm.input_shape == (784,)


def test_standardize_is_per_channel_for_images(tmp_path):
    make_cifar(tmp_path)
    dm = StackedDataModule(_cfg("cifar10", tmp_path, standardize=True), [0], 4, 3)
    dm.setup()
    x = dm.x_train.double()
    np.testing.assert_allclose(x.mean((0, 2, 3)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std((0, 2, 3), unbiased=False).numpy(), 1.0, atol=1e-4)


def test_missing_folder_is_one_line_naming_the_fetch_command(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_images(_cfg("mnist", tmp_path / "nowhere"), "datasets.mnist")
    msg = str(err.value)
    assert "\n" not in msg and "datasets.mnist" in msg
    assert f"python -m pipeline.data.fetch --dataset mnist --source torchvision --root {tmp_path / 'nowhere'}" in msg


def _damage(tmp_path, how):
    make_mnist(tmp_path, gz=how == "gzip")
    raw = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    if how == "magic":
        raw.write_bytes(b"\x00\x00\x08\x01" + raw.read_bytes()[4:])
    elif how == "truncated":
        raw.write_bytes(raw.read_bytes()[:-5])
    elif how == "gzip":
        gz = raw.with_name(raw.name + ".gz")
        gz.write_bytes(gz.read_bytes()[:40])
    elif how == "missing":
        raw.unlink()
    return raw


@pytest.mark.parametrize(
    "how,why", [("magic", "IDX magic"), ("truncated", "data bytes"), ("gzip", "gzip"), ("missing", "missing")]
)
def test_a_damaged_or_missing_idx_file_is_one_line(tmp_path, how, why):
    _damage(tmp_path, how)
    with pytest.raises(ConfigError, match=why) as err:
        load_images(_cfg("mnist", tmp_path), "datasets.mnist")
    assert "\n" not in str(err.value) and "python -m pipeline.data.fetch --dataset mnist" in str(err.value)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize(
    "content,why",
    [
        (b"\x80\x04not a pickle", "not a CIFAR-10 batch"),
        (pickle.dumps([1, 2]), "no dict"),
        (pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}), "3072"),
        (pickle.dumps({b"data": _Boom()}), "only arrays"),
    ],
)
def test_a_damaged_or_hostile_cifar_batch_is_one_line_and_runs_nothing(tmp_path, monkeypatch, content, why):
    monkeypatch.chdir(tmp_path)
    make_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(content)
    with pytest.raises(ConfigError, match=why) as err:
        load_images(_cfg("cifar10", tmp_path), "datasets.cifar")
    assert "\n" not in str(err.value) and "python -m pipeline.data.fetch --dataset cifar10" in str(err.value)
    assert not (tmp_path / "PWNED").exists()


def test_preflight_refuses_a_cnn_on_tabular_data():
    with pytest.raises(ConfigError, match="model.kind: cnn needs image data"):
        preflight(make_cell("bn", "synthetic", model={"kind": "cnn"}))


def test_preflight_refuses_full_set_evaluations_that_cannot_fit_memory():
    # inside the declared bounds (1024 members, 200 channels: 3.7e8 weights), ~300 GB of activations
    cell = make_cell(
        "bn",
        "digits_images",
        model={"kind": "cnn", "channels": 200},
        datasets={"digits_images": {"subset": None}},
        optim={"lrs": [0.001 * (i + 1) for i in range(32)], "seeds": list(range(32)), "batch_size": 16},
    )
    with pytest.raises(ConfigError, match=r"datasets.digits_images.subset: .*GiB"):
        preflight(cell)


def test_mlp_on_digits_images_is_the_mlp_on_digits(tmp_path):
    """Flattened 1x8x8 digits are the same pixels in the same order: identical runs."""
    hist = {}
    for ds in ("digits", "digits_images"):
        cell = make_cell(
            "bn",
            ds,
            datasets={"digits_images": {"subset": None}},
            train={"steps": 8, "log_every": 4, "eval_every": 4},
            tracking={"log_every": 4},
        )
        run_cell(cell, tmp_path / ds, track=False, progress=False)
        hist[ds] = pd.read_parquet(tmp_path / ds / "history.parquet")
    pd.testing.assert_frame_equal(hist["digits"], hist["digits_images"])


def test_a_cnn_cell_trains_on_mnist_files(tmp_path):
    make_mnist(tmp_path, gz=True)
    cell = make_cell(
        "bn",
        "mnist",
        model={"kind": "cnn", "channels": 4, "depth": 2, "pool_every": 1},
        datasets={"mnist": {"kind": "mnist", "root": str(tmp_path), "val_from": "test"}},
        optim={"batch_size": 8},
        train={"steps": 4, "log_every": 2, "eval_every": 2},
        tracking={"log_every": 2},
    )
    summary = run_cell(cell, tmp_path / "out", track=False, progress=False).summary
    assert summary.classes == 10 and all(np.isfinite(m.full_loss_train) for m in summary.members)


# -- fetch_data, offline -------------------------------------------------------------------
def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("tried the network")

    monkeypatch.setattr(fetch_data.urllib.request, "urlopen", refuse)


def _patch_mnist_md5s(tmp_path, monkeypatch):
    """Official MD5s replaced by those of tiny gz files written in the real format."""
    make_mnist(tmp_path, gz=True)
    raw = tmp_path / "MNIST" / "raw"
    sums = {name: _md5((raw / f"{name}.gz").read_bytes()) for name in fetch_data.SETS["mnist"]["gz"]}
    monkeypatch.setitem(fetch_data.SETS["mnist"], "gz", sums)
    return raw


def test_fetch_keeps_verified_files_and_extracts_them_for_the_loader(tmp_path, monkeypatch, no_network):
    raw = _patch_mnist_md5s(tmp_path, monkeypatch)
    assert fetch_data.fetch("mnist", tmp_path, log=lambda s: None) is True  # already there
    assert (raw / "train-images-idx3-ubyte").is_file()  # extracted beside the gz, as torchvision does
    x, _ = load_images(_cfg("mnist", tmp_path), "datasets.mnist")
    (raw / "train-images-idx3-ubyte.gz").unlink()  # the loader now reads the extracted raw file
    np.testing.assert_array_equal(load_images(_cfg("mnist", tmp_path), "datasets.mnist")[0], x)


def test_fetch_replaces_a_damaged_file_only_with_bytes_of_the_official_checksum(tmp_path, monkeypatch):
    raw = _patch_mnist_md5s(tmp_path, monkeypatch)
    gz = raw / "train-labels-idx1-ubyte.gz"
    good = gz.read_bytes()
    gz.write_bytes(b"damaged")
    served = {
        "https://ossci-datasets.s3.amazonaws.com/mnist/": b"wrong bytes",
        "http://yann.lecun.com/exdb/mnist/": good,
    }

    def urlopen(url, timeout):
        return io.BytesIO(served[url.rsplit("/", 1)[0] + "/"])

    monkeypatch.setattr(fetch_data.urllib.request, "urlopen", urlopen)
    assert fetch_data.fetch("mnist", tmp_path, log=lambda s: None) is False
    assert gz.read_bytes() == good  # the first mirror's wrong bytes never replaced anything
    served["http://yann.lecun.com/exdb/mnist/"] = b"also wrong"
    gz.write_bytes(b"damaged")
    with pytest.raises(fetch_data.FetchError, match="checksum"):
        fetch_data.fetch("mnist", tmp_path, log=lambda s: None)
    assert gz.read_bytes() == b"damaged" and not list(raw.glob("*.part"))


def test_fetch_cifar_extracts_only_the_batches_from_a_verified_archive(tmp_path, monkeypatch, no_network):
    src = tmp_path / "src"
    make_cifar(src)
    archive = tmp_path / "root" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        evil = tarfile.TarInfo("../evil.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    spec = fetch_data.SETS["cifar10"]
    files = {f: _md5((src / "cifar-10-batches-py" / f).read_bytes()) for f in spec["files"]}
    monkeypatch.setitem(spec, "files", files)
    monkeypatch.setitem(spec, "archive", (spec["archive"][0], archive.name, _md5(archive.read_bytes())))
    assert fetch_data.fetch("cifar10", archive.parent, log=lambda s: None) is False  # extracted now
    assert not (tmp_path / "evil.txt").exists()
    assert fetch_data.fetch("cifar10", archive.parent, log=lambda s: None) is True  # and there next time
    assert load_images(_cfg("cifar10", archive.parent), "datasets.c")[0].shape == (20, 3, 32, 32)


def test_fetch_cli_refuses_an_unknown_data_set(capsys):
    with pytest.raises(SystemExit) as exc:
        fetch_data.main(["--dataset", "imagenet"])
    assert exc.value.code == 2
