"""`dvc commit -f` for a batch of stages in one pass: DVC's own commit (dvc/repo/commit.py with
force, through its Python API), the stages collected once and dvc.lock rewritten once.

    python -m pipeline.dvc_commit train@bn-synthetic train@none-digits ...

Why not the CLI: `dvc commit -f A B C` commits target by target, and each target collects every
stage of dvc.yaml again and rewrites dvc.lock; both parse the whole lock with ruamel's pure-Python
YAML, so a batch costs (targets x lock size). Measured on a 22-cell grid: 8 targets 5.7 s of CPU,
22 targets 14 s, against 2.4 s for all of them here (pipeline.grid commits each finished cell,
issue 21). The lock written is the one `dvc commit -f` writes (tests/test_scaleout.py).
Exit 2 with one line naming a stage that dvc.yaml does not define; nothing is committed then.
"""

from __future__ import annotations

import sys


def commit(names: list[str]) -> list[str]:
    """Save and commit the named stages of the DVC repository here (under DVC's repo lock, as
    `dvc commit -f` does), then dump each dvc.yaml's stages to its lock at once; returns their names."""
    from dvc.repo import Repo, lock_repo

    with Repo() as repo, lock_repo(repo):
        stages = {stage.addressing: stage for stage in repo.index.stages}
        unknown = [name for name in names if name not in stages]
        if unknown:
            raise KeyError(unknown[0])
        chosen = [stages[name] for name in dict.fromkeys(names)]
        for stage in chosen:
            stage.save()  # the deps' and outs' hashes (force: whether or not they changed)
            stage.commit()  # the outputs into DVC's cache
        by_file: dict[str, list] = {}
        for stage in chosen:
            by_file.setdefault(stage.dvcfile.path, []).append(stage)
        for group in by_file.values():
            group[0].dvcfile.dump_stages(group, update_pipeline=False)
    return [stage.addressing for stage in chosen]


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    from dvc.exceptions import DvcException

    try:
        commit(names)
    except KeyError as err:
        print(f"normlab: dvc.yaml defines no stage {err.args[0]!r}; nothing committed", file=sys.stderr)
        return 2
    except DvcException as err:  # e.g. another DVC command holds the repository's lock: one line, as DVC says it
        print(f"normlab: dvc commit: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
