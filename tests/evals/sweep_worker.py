"""Runs a sweep from a YAML config with each cell slowed down, for the kill-and-resume test.

Usage: python sweep_worker.py CONFIG RUN_DIR SECONDS_PER_CELL
"""

from __future__ import annotations

import sys
import time

from ragloom.evals import sweep


def main() -> None:
    config_path, run_dir, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    score_cell = sweep.score_cell

    def slow_score_cell(*args, **kwargs):
        time.sleep(delay)
        return score_cell(*args, **kwargs)

    sweep.score_cell = slow_score_cell
    sweep.run_sweep(sweep.SweepConfig.from_yaml(config_path), run_dir, progress=False)


if __name__ == "__main__":
    main()
