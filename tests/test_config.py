"""Bad settings: one clear line naming the key and what is allowed, exit 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, cell_settings, load_params
from tests.conftest import BASE, merge

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path, over=None, raw=None) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(raw if raw is not None else yaml.safe_dump(merge(BASE, over or {}), sort_keys=False))
    return p


@pytest.mark.parametrize(
    "over, expected",
    [
        ({"model": {"widht": 8}}, "params.yaml: model.widht: unknown key (allowed: kind, depth, width, channels"),
        ({"bogus": 1}, "params.yaml: bogus: unknown key (allowed: grid, variants, datasets"),
        (
            {"variants": {"bn": {"norm": "bn", "afine": True}}},
            "params.yaml: variants.bn.afine: unknown key (allowed: norm, affine",
        ),
        ({"grid": {"variants": ["bnn"]}}, "params.yaml: grid.variants.0: unknown variant 'bnn' (defined: none, bn,"),
        (
            {"grid": {"datasets": ["mnist"]}},
            "params.yaml: grid.datasets.0: unknown dataset 'mnist' (defined: synthetic,",
        ),
        (
            {"variants": {"x": {"norm": "batchnorm"}}},
            "params.yaml: variants.x.norm: Input should be 'none', 'bn', 'center'",
        ),
        ({"optim": {"lrs": [0.1, -0.5]}}, "params.yaml: optim.lrs.1: must be > 0 (got -0.5)"),
        ({"optim": {"lrs": [0.1, 0]}}, "params.yaml: optim.lrs.1: must be > 0 (got 0"),
        ({"model": {"width": "64"}}, "params.yaml: model.width: Input should be a valid integer (got '64')"),
        ({"train": {"steps": 0}}, "params.yaml: train.steps: Input should be greater than 0 (got 0)"),
        (
            {"model": {"activation": "swish"}},
            "params.yaml: model.activation: Input should be 'relu', 'tanh', 'gelu' or 'identity'",
        ),
        ({"datasets": {"mine": {"kind": "csv"}}}, "params.yaml: datasets.mine.path: required when kind is csv"),
        # names become cell folders and stage names; a `/` or `..` would write outside --runs
        (
            {"variants": {"a/b": {"norm": "bn"}}},
            "params.yaml: variants.a/b: a name may hold only letters, digits and _",
        ),
        (
            {"datasets": {"..": {"kind": "digits"}}},
            "params.yaml: datasets...: a name may hold only letters, digits and _",
        ),
        (
            {"variants": {"x-y": {"norm": "bn"}}},
            "params.yaml: variants.x-y: a name may hold only letters, digits and _",
        ),
        # a typo in a report setting would silently drop its comparisons
        (
            {"report": {"twins": {"center_detachd": ["center"]}}},
            "params.yaml: report.twins: unknown variant 'center_detachd' (defined: none, bn,",
        ),
        (
            {"report": {"twins": {"center_detached": ["centre"]}}},
            "params.yaml: report.twins.center_detached.0: unknown variant 'centre'",
        ),
        (
            {"report": {"blowup_deciders": ["center_detached", "running_centre_detached"]}},
            "params.yaml: report.blowup_deciders.1: unknown variant 'running_centre_detached'",
        ),
        (
            {"report": {"k_sweep": ["population_detached_k7"]}},
            "params.yaml: report.k_sweep.0: unknown variant 'population_detached_k7'",
        ),
        # label noise is a fraction of the training labels: 1 would leave no true label
        (
            {"datasets": {"synthetic": {"kind": "synthetic", "label_noise": 1.0}}},
            "params.yaml: datasets.synthetic.label_noise: Input should be less than 1",
        ),
        (
            {"datasets": {"synthetic": {"kind": "synthetic", "label_noise": -0.1}}},
            "params.yaml: datasets.synthetic.label_noise: Input should be greater than or equal to 0",
        ),
        (
            {"report": {"alpha_windows": 0}},
            "params.yaml: report.alpha_windows: Input should be greater than or equal to 1",
        ),
        (
            {"report": {"primary": {"claim2": {"endpoint": "kappa", "smallest_effect": 0.1}}}},
            "params.yaml: report.primary.claim2.endpoint: 'kappa' is not an endpoint of this test (allowed: drive_decay, "
            "alpha_excess)",
        ),
    ],
)
def test_bad_params_name_the_key_and_what_is_allowed(tmp_path, over, expected):
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path, over))
    msg = str(err.value)
    assert msg.startswith(expected), msg
    assert "\n" not in msg


def test_scientific_notation_is_a_float_as_in_dvc(tmp_path):
    text = yaml.safe_dump(BASE, sort_keys=False).replace(
        "  batch_size: 16\n", "  batch_size: 16\n  weight_decay: 1e-4\n"
    )
    assert load_params(_write(tmp_path, raw=text)).optim.weight_decay == 1e-4


def test_anchors_aliases_and_merge_keys_are_not_duplicates(tmp_path):
    """One mapping written once and reused is not a key written twice."""
    text = yaml.safe_dump(BASE, sort_keys=False).replace(
        "\nvariants:\n",
        "\nvariants:\n  base: &plain {norm: none, affine: false}\n  again: *plain\n"
        "  merged: {<<: *plain, bias: false}\n",
    )
    p = load_params(_write(tmp_path, raw=text))
    assert p.variants["again"] == p.variants["base"] and p.variants["merged"].bias is False


@pytest.mark.parametrize(
    "raw, expected",
    [
        (
            "grid: {variants: [bn]}\ngrid: {variants: [none]}\n",
            "params.yaml: line 2, column 1: duplicate key grid (first at line 1, column 1); write each key once",
        ),
        (
            "variants:\n  bn: {norm: bn, norm: none}\n",
            "params.yaml: line 2, column 18: duplicate key variants.bn.norm (first at line 2, column 8); write each key once",
        ),
        ("optim:\n  lrs: [0.1\n", "params.yaml: line 3, column 1: expected ',' or ']', but got '<stream end>'"),
        (
            "optim:\n  lrs: [1]\n  seeds [0]\n  batch_size: 4\n",
            "params.yaml: line 4, column 3: could not find expected ':'",
        ),
        ("optim:\n  lrs 0.1\n  seeds: [0]\n", "params.yaml: line 3, column 8: mapping values are not allowed here"),
        ("a: 1\n\tb: 2\n", "params.yaml: line 2, column 1: found character '\\t' that cannot start any token"),
    ],
)
def test_yaml_errors_name_line_and_column(tmp_path, raw, expected):
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path, raw=raw))
    assert str(err.value) == expected


def test_params_not_text_or_a_folder(tmp_path):
    (tmp_path / "params.yaml").write_bytes(b"\xff\xfe\x00 binary")
    with pytest.raises(ConfigError, match=r"^params\.yaml: not a text file \(not UTF-8\)$"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a params file$"):
        load_params(tmp_path)


def test_missing_data_file(tmp_path):
    params = load_params(_write(tmp_path, {"datasets": {"mine": {"kind": "csv", "path": "nope/data.csv"}}}))
    with pytest.raises(ConfigError, match=r"^datasets\.mine\.path: file not found: nope/data.csv$"):
        cell_settings(params, "bn", "mine")


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "absent.yaml")


def _cli(tmp_path, params: Path, *args, env=None):
    out = tmp_path / "cell"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.train", "--params", str(params), "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    return proc, out


def test_cli_bad_params_exit_2_one_line_nothing_written(tmp_path):
    proc, out = _cli(
        tmp_path, _write(tmp_path, {"optim": {"lrs": [-1.0]}}), "--variant", "bn", "--dataset", "synthetic"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "normlab: params.yaml: optim.lrs.0: must be > 0 (got -1.0)"
    assert not out.exists()


def test_cli_unknown_variant(tmp_path):
    proc, out = _cli(tmp_path, _write(tmp_path), "--variant", "bnx", "--dataset", "synthetic")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("normlab: --variant: unknown variant 'bnx' (defined: none, bn,")
    assert not out.exists()


def test_cli_unreachable_tracking_server_fails_before_work(tmp_path):
    db = tmp_path / "kept.db"
    proc, out = _cli(
        tmp_path,
        _write(tmp_path),
        "--variant",
        "bn",
        "--dataset",
        "synthetic",
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
    )
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("normlab: MLFLOW_TRACKING_URI: tracking store http://127.0.0.1:9 is not reachable")
    assert not out.exists() and not db.exists()


def test_adam_betas_from_yaml_list_and_bad_ones_refused():
    """YAML has no tuples: `betas: [0.9, 0.99]` is accepted; a wrong length or a non-number is refused."""
    from pipeline.config import OptimSettings

    assert OptimSettings(name="adam", lrs=[0.1], seeds=[0], betas=[0.9, 0.99]).betas == (0.9, 0.99)
    for bad in ([0.9], [0.9, 0.99, 0.5], ["x", 0.9]):
        with pytest.raises(ValueError, match="betas"):
            OptimSettings(name="adam", lrs=[0.1], seeds=[0], betas=bad)


def test_label_noise_flips_that_fraction_of_the_training_labels_only():
    """Seeded: the same labels every time; exactly round(fraction x N) training labels change, each to another
    class; validation labels and every feature stay as without noise."""
    import numpy as np

    from pipeline.config import DatasetSettings
    from pipeline.data.sets import load_split

    clean = DatasetSettings(kind="synthetic", dim=6, classes=3, samples=200)
    noisy = clean.model_copy(update={"label_noise": 0.3})
    (xa, ya, xva, yva), (xb, yb, xvb, yvb) = load_split(clean), load_split(noisy)
    assert np.array_equal(xa, xb) and np.array_equal(xva, xvb) and np.array_equal(yva, yvb)
    changed = ya != yb
    assert changed.sum() == round(0.3 * len(ya)) and set(np.unique(yb)) <= {0, 1, 2}
    assert np.array_equal(load_split(noisy)[1], yb)  # seeded
    other = noisy.model_copy(update={"seed": 1})
    assert not np.array_equal(
        load_split(other)[1] != load_split(other.model_copy(update={"label_noise": 0.0}))[1], changed
    )
