"""The Ray executor runs the same cells as the local one (one small test)."""

from __future__ import annotations

import os

import pytest

from ragloom._config import data_dir
from ragloom.evals.sweep import SweepConfig, run_sweep

pytestmark = [pytest.mark.ray,
              pytest.mark.skipif(not (data_dir() / "covid_qa_deepset").is_dir(),
                                 reason="shared data sets not present")]


def test_ray_executor_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    config = SweepConfig(dataset="covid_qa", num_questions=3, max_docs=3, generate=False,
                         embedder="hash", axes={"chunk_size": [400, 800],
                                                "retrieval": ["dense", "bm25"]},
                         base={"chunker": "chars", "chunk_overlap": 40})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(config, tmp_path / "ray", executor="ray", progress=False)
    finally:
        ray.shutdown()
    local = run_sweep(config, tmp_path / "local", progress=False)
    assert len(remote) == len(local) == 4
    by_id = {r.cell_id: r.metrics for r in local}
    assert {r.cell_id: r.metrics for r in remote} == by_id
    assert all(r.pid != os.getpid() for r in remote)
