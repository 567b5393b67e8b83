"""A member trained inside a stack follows the same trajectory as trained alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.cell import run_cell
from tests.conftest import ALL_VARIANTS, make_cell

STACK = {"lrs": [0.05, 0.5], "seeds": [0, 1]}  # members: (0.05,0) (0.05,1) (0.5,0) (0.5,1)


@pytest.mark.parametrize("variant", ALL_VARIANTS + ["bias_only_toy"])
def test_stacked_member_equals_member_alone(tmp_path, variant):
    stacked = make_cell(
        variant, optim=STACK, train={"steps": 15, "log_every": 5, "eval_every": 5}, tracking={"log_every": 5}
    )
    run_cell(stacked, tmp_path / "stack", track=False, progress=False)
    hs = pd.read_parquet(tmp_path / "stack" / "history.parquet")
    for member, (lr, seed) in [(1, (0.05, 1)), (2, (0.5, 0))]:
        alone = make_cell(
            variant,
            optim={"lrs": [lr], "seeds": [seed]},
            train={"steps": 15, "log_every": 5, "eval_every": 5},
            tracking={"log_every": 5},
        )
        run_cell(alone, tmp_path / f"alone{member}", track=False, progress=False)
        ha = pd.read_parquet(tmp_path / f"alone{member}" / "history.parquet")
        hm = hs[hs["member"] == member].drop(columns=["member"]).reset_index(drop=True)
        ha = ha.drop(columns=["member"]).reset_index(drop=True)
        assert list(hm.columns) == list(ha.columns) and len(hm) == len(ha)
        for col in hm.columns:
            np.testing.assert_allclose(
                hm[col].to_numpy(float),
                ha[col].to_numpy(float),
                rtol=2e-5,
                atol=1e-6,
                err_msg=f"{variant} member {member} column {col}",
            )
