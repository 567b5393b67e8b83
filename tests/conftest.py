"""Shared fixtures: tiny settings built in code, and a throw-away MLflow store."""

from __future__ import annotations

import copy
import os

import pytest

from pipeline.config import Params, cell_settings

BASE = {
    "grid": {"variants": ["bn"], "datasets": ["synthetic"]},
    "variants": {
        "none": {"norm": "none", "affine": False},
        "bn": {"norm": "bn", "affine": True},
        "bn_nobias": {"norm": "bn", "affine": True, "bias": False},
        "center": {"norm": "center", "affine": False},
        "center_detached": {"norm": "center_detached", "affine": False},
        "standardize_detached": {"norm": "standardize_detached", "affine": False},
        "population_detached": {"norm": "population_detached", "affine": False, "refresh_every": 3},
        "population_detached_k1": {"norm": "population_detached", "affine": False, "refresh_every": 1},
        "population_center_detached": {"norm": "population_center_detached", "affine": False, "refresh_every": 3},
        "running_detached": {"norm": "running_detached", "affine": False},
        "running_center_detached": {"norm": "running_center_detached", "affine": False},
        "frozen": {"norm": "frozen", "affine": False},
        "batch_renorm": {"norm": "batch_renorm", "affine": True},
        # hold, ramp and the limits all fall inside the tests' 15-20 steps
        "batch_renorm_ramp": {"norm": "batch_renorm", "affine": True, "renorm_hold": 3, "renorm_ramp": 6},
        "layernorm": {"norm": "layernorm", "affine": True},
        "groupnorm": {"norm": "groupnorm", "affine": True, "groups": 2},
        "weightnorm": {"norm": "weightnorm", "affine": False},
        "bias_only_toy": {"norm": "center_detached", "affine": False, "trainable": "bias"},
    },
    "datasets": {
        "synthetic": {"kind": "synthetic", "input_mean": 3.0, "dim": 6, "classes": 3, "samples": 200, "seed": 0},
        "synthetic_zero_mean": {"kind": "synthetic", "input_mean": 0.0, "dim": 6, "classes": 3, "samples": 200},
        "digits": {"kind": "digits"},
        "digits_images": {"kind": "digits_images", "subset": 200},  # 1x8x8 images, for model.kind cnn
    },
    "model": {"depth": 2, "width": 8},
    "optim": {"lrs": [0.05, 0.5], "seeds": [0, 1], "batch_size": 16},
    "train": {"steps": 20, "log_every": 1, "eval_every": 5, "threads": 1},
    "tracking": {"experiment": "test", "log_every": 1, "flush_every": 7},
}

# warm-start servers started by the tests' CLI calls go away soon after the suite ends
os.environ.setdefault("NORMLAB_WARM_IDLE", "30")

ALL_VARIANTS = [v for v in BASE["variants"] if v != "bias_only_toy"]


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_params(**over) -> Params:
    return Params.model_validate(merge(BASE, over))


def make_cell(variant: str, dataset: str = "synthetic", **over):
    return cell_settings(make_params(**over), variant, dataset)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


class LoopbackServer:
    """An MLflow server process on 127.0.0.1 (tests/mlflow_loopback.py) over `db`; kill() is its death."""

    def __init__(self, folder):
        import subprocess
        import sys
        from pathlib import Path

        from pipeline.spec import environment

        Path(folder).mkdir(parents=True, exist_ok=True)
        self.db = Path(folder) / "server.db"
        script = Path(__file__).with_name("mlflow_loopback.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.db), str(Path(folder) / "artifacts")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **environment.NO_TELEMETRY},
        )
        line = self.proc.stdout.readline()  # "port N" once the store is migrated and the socket listens
        if not line.startswith("port "):
            self.kill()
            raise RuntimeError(f"the loopback MLflow server did not start (exit {self.proc.returncode})")
        self.uri = f"http://127.0.0.1:{int(line.split()[1])}"

    def kill(self) -> None:
        """SIGKILL by pid, as a server dies; returns once it is gone (its port refuses from then on)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def mlflow_server(tmp_path):
    """A live MLflow server on loopback (HTTP), killed by the test when it wants it dead; always gone after."""
    server = LoopbackServer(tmp_path / "mlflow-server")
    try:
        yield server
    finally:
        server.kill()


# -- hand-built cell records (the shape of summary.json: pipeline.spec.records) ------------------
def layer_dict(layer: int = 0, **over) -> dict:
    """One hidden layer's LayerStats as summary.json holds it (a layer with b, by default)."""
    return {
        "layer": layer,
        "W_norm": 6.0,
        "W_norm0": 4.0,
        "b_norm": 2.0,
        "b_norm0": 0.0,
        "b_drift": 2.0,
        "gsum_persist": 0.9,
        **over,
    }


def member_dict(j: int = 0, lr: float = 0.1, seed: int = 0, layers: list | None = None, **over) -> dict:
    """One MemberSummary as summary.json holds it: a member that trained well, one hidden layer."""
    return {
        "member": j,
        "lr": lr,
        "seed": seed,
        "diverged": False,
        "diverged_step": None,
        "initial_loss": 1.4,
        "final_loss": 0.3,
        "init_full_loss_train": 1.4,
        "init_full_acc_train": 0.25,
        "full_loss_train": 0.2,
        "full_acc_train": 0.95,
        "full_loss_eval": 0.5,
        "full_acc_eval": 0.8,
        "val_loss_eval": 0.3,
        "val_acc_eval": 0.9,
        "layers": [layer_dict(0)] if layers is None else layers,
        **over,
    }


def summary_dict(cell: str = "bn-synthetic", members: list | None = None, **over) -> dict:
    """A whole summary.json (CellSummary) as a dict: 4 classes, one member by default."""
    variant, dataset = cell.rsplit("-", 1)
    return {
        "cell": cell,
        "variant": variant,
        "dataset": dataset,
        "norm": variant,
        "steps": 500,
        "input_mean_norm": 3.0,
        "classes": 4,
        "chance_loss": 1.3862943611198906,
        "config_hash": "x",
        "members": [member_dict()] if members is None else members,
        **over,
    }


def summary_record(cell: str = "bn-synthetic", members: list | None = None, **over):
    """summary_dict validated: the typed CellSummary a reader gets."""
    from pipeline.spec.records import CellSummary

    return CellSummary.model_validate(summary_dict(cell, members, **over))


# -- the test loop (issue 21): `make test-fast` is -m "not slow"; `make test` runs everything, on
# pytest-xdist workers (--dist loadgroup) ------------------------------------------------------------
# Each of these took >= ~3 s (a real process or server, a trained cell, a report build, a SQLite busy
# timeout, a calibration over many null grids): slow, so out of test-fast; `make test` still runs them.
HEAVY = {
    "test_calibration.py": {
        "test_criterion_catches_a_test_that_ignores_shared_seeds",
        "test_old_rule_miscalibrated_on_null",
        "test_new_rule_calibrated_on_null",
        "test_member_simulator_has_the_structure_it_claims",
        "test_null_members_reads_what_evaluate_all_reads",
    },
    "test_loopback.py": {"test_normlab_ui_listens_on_loopback_only"},
    "test_store_failures.py": {
        "test_a_store_locked_mid_cell_is_one_line_naming_it",
        "test_ctrl_c_while_the_tracking_process_connects_is_130_and_one_line",
        "test_a_full_disk_under_the_store_mid_cell_is_one_line_naming_it",
        "test_a_full_disk_under_the_cells_folder_is_one_line",
    },
    "test_report_out.py": {
        "test_a_failing_report_on_another_filesystem_keeps_the_old_one",
        "test_a_fresh_folder_gets_the_marker_and_is_reused",
        "test_reports_as_a_symlink_works_and_leaves_no_old_or_tmp_entries",
        "test_compare_reports_on_a_users_folder_is_refused_untouched",
    },
    "test_safety.py": {"test_out_never_touches_what_normlab_did_not_create"},
    "test_tracking_server.py": {"test_tracking_server_postgres_refuses_other_local_users"},
    "test_mlflow_browsing.py": {
        "test_report_links_each_cell_by_its_outputs_hash_and_logs_its_params",
        "test_one_name_per_claim_in_headings_metrics_tables_and_mlflow",
        "test_report_without_a_store_gives_the_search_to_paste",
        "test_member_runs_carry_what_varies_and_the_variants_own_settings",
    },
    "test_validation.py": {"test_bad_input_through_a_real_process"},
    "test_limits.py": {
        "test_an_impossible_summary_is_one_line_naming_the_key",
        "test_a_gzip_bomb_through_the_cli_is_one_line",
        "test_an_unreachable_postgresql_store_is_one_line_without_retries",
    },
    "test_report.py": {
        "test_corrupt_record_is_one_line_exit_2_and_previous_report_untouched",
        "test_a_hung_drawer_is_stopped_and_the_figures_drawn_here",
        "test_failing_report_leaves_the_previous_one_and_foreign_entries_as_they_were",
        "test_parent_runs_get_the_cell_numbers_at_the_reports_thresholds",
        "test_a_tracked_cell_run_is_found_by_its_outputs",
        "test_forked_drawers_draw_the_same_files_in_the_same_order",
        "test_report_run_finds_cell_runs_by_outputs_hash",
        "test_a_figure_no_drawer_knows_is_said_not_crashed",
        "test_cell_from_other_params_is_excluded_and_named",
    },
    "test_ray_private.py": {"test_local_ray_files_are_private_to_their_user"},
    "test_survival.py": {"test_cluster_swap_p_is_calibrated_on_null_grids"},
    "test_report_links.py": {
        "test_a_forged_copy_of_the_cells_run_does_not_relink_it",
        "test_a_forged_hash_on_another_cells_run_is_ignored",
    },
    "test_ecosystem.py": {"test_normlab_train_runs_carry_the_entry_point_and_git_commit"},
    "test_config.py": {"test_cli_unreachable_tracking_server_fails_before_work"},
    "test_tracking.py": {
        "test_runs_that_cannot_be_closed_fail_the_cell_and_leave_its_folder_as_it_was",
        "test_cell_records_parent_child_runs_params_tags_metrics",
        "test_both_trackers_write_the_same_records",
    },
    "test_extend_variant.py": {"test_the_whole_report_runs_on_the_new_variant"},
    "test_packaging.py": {"test_an_installed_normlab_records_in_the_working_folder_never_in_site_packages"},
}
# module-scoped fixtures that take seconds to minutes (null grids): every test using one is slow
HEAVY_FIXTURES = {"member_null", "drive_readings"}

# One xdist worker runs each of these groups whole, in file order (GroupScheduling below): modules whose
# tests share a module-scoped fixture (built once, not once per worker) or build on each other's state
# (test_dvc_pipeline's repo), and every test that starts a Ray cluster or a PostgreSQL server (one at a time
# on a 2-core machine). pytest-xdist's own xdist_group marks do nothing under pytest 9 (xdist 3.8 renames
# item._nodeid, which pytest 9 no longer reads), so the scheduler groups by file here.
GROUPS = {
    "test_dvc_pipeline.py": "dvc_pipeline",
    "test_ecosystem.py": "ecosystem",
    "test_calibration.py": "calibration",
    "test_report.py": "report",
    "test_survival.py": "survival",
    "test_figure_style.py": "figure_style",
    "test_packaging.py": "packaging",
    "test_warm_security.py": "warm_security",
    "test_ray_token.py": "cluster",
    "test_ray_private.py": "cluster",
}
# in these files only the named tests form a group: test_scaleout's Ray cluster and local-executor tests share
# the module's `sequential` repo (and the Ray test joins the other Ray clusters); its other tests go anywhere
GROUPED_TESTS = {
    "test_scaleout.py": (
        "cluster",
        {
            "test_ray_two_nodes_postgres_server_worker_killed",
            "test_local_executor_matches_sequential_repro_with_a_worker_killed",
        },
    ),
}


def group_of(nodeid: str) -> str | None:
    """The group a test belongs to (GROUPS, GROUPED_TESTS), or None."""
    path, _, rest = nodeid.partition("::")
    file = path.rsplit("/", 1)[-1]
    if file in GROUPED_TESTS:
        group, names = GROUPED_TESTS[file]
        return group if rest.split("[", 1)[0] in names else None
    return GROUPS.get(file)


# the longest groups and tests first (seconds measured on 2 cores), so no worker is left with a long one at
# the end; the rest keep their file order
FIRST = [
    "cluster",
    "test_benchmark.py",
    "calibration",
    "dvc_pipeline",
    "test_scaleout.py",
    "report",
    "test_study.py",
    "test_provenance.py",
    "test_mlflow_browsing.py",
    "ecosystem",
    "test_loopback.py",
    "test_store_failures.py",
    "test_safety.py",
    "test_limits.py",
    "test_report_out.py",
    "warm_security",
]


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects by the marks added here
def pytest_collection_modifyitems(config, items):
    for item in items:
        file = item.path.name
        name = getattr(item, "originalname", item.name)
        if name in HEAVY.get(file, ()) or HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

    def rank(item) -> int:
        key = group_of(item.nodeid) or item.path.name
        return FIRST.index(key) if key in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: each file keeps its order


def pytest_configure(config):
    # the warm-start server's socket folder (pipeline/warm/client.py: $XDG_RUNTIME_DIR/normlab) private
    # to this pytest process: xdist workers, and a developer's own warm server, never share one. Tests
    # of the default folder pop XDG_RUNTIME_DIR and set TMPDIR themselves.
    import tempfile

    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="normlab-xdg-")


def pytest_unconfigure(config):
    import shutil

    folder = os.environ.get("XDG_RUNTIME_DIR", "")
    if "normlab-xdg-" in folder:  # ours, from pytest_configure
        shutil.rmtree(folder, ignore_errors=True)


try:
    import xdist  # noqa: F401 - the `test` extra installs it; without it the suite runs in one process
except ImportError:
    xdist = None

if xdist is not None:

    def pytest_xdist_make_scheduler(config, log):
        """`-n N --dist loadgroup`: each group (group_of) goes whole to one worker, every other test on its own,
        handed out in collection order (the longest first: FIRST), not reordered by group size."""
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadScopeScheduling

        class GroupScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                if "@" in nodeid:  # an xdist_group mark, should xdist's own grouping work again
                    return nodeid.rsplit("@", 1)[-1]
                return group_of(nodeid) or nodeid

        config.option.loadscopereorder = False
        return GroupScheduling(config, log)
