"""The benchmark matrices say how their finished runs were made: for every run of benchmarks/matrix-*.yaml whose
metrics.json is committed, its config (configs/<name>.yaml, the seed, the block's overrides) resolves to the
config.yaml the run was trained with. A config edited since must have its old keys set back in the blocks of the
runs it made, or those runs retrained."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmner.config import load_config
from mmner.train import sweep as sw

ROOT = Path(__file__).resolve().parents[1]
MATRICES = sorted((ROOT / "benchmarks").glob("matrix-*.yaml"))


def resolved(config) -> dict:
    out = config.model_dump(exclude={"name"})
    out["model"] = config.model_params().model_dump()
    return out


@pytest.mark.parametrize("matrix", MATRICES, ids=lambda p: p.stem)
def test_every_finished_run_of_a_matrix_was_trained_with_the_config_it_gives(matrix, monkeypatch):
    monkeypatch.chdir(ROOT)  # the matrices' config paths and roots are relative to the repository
    _, runs = sw.load_matrix(matrix)
    root = ROOT / "benchmarks" / "runs"
    finished = [r for r in runs if (root / r.name / "metrics.json").is_file()]
    differ = [r.name for r in finished
              if resolved(load_config(r.config_path, [f"seed={r.seed}", *r.sets]))
              != resolved(load_config(root / r.name / "config.yaml"))]
    assert not differ, f"{matrix.name}: these runs were trained with another config than the matrix gives: {differ}"
