"""Wall time of the sweep demo (presets/sweep-demo.yaml over the demo) against its 5-minute budget.

    python benchmarks/sweep_demo.py [--cores 2] [--keep]

Copies the workflow into a temporary folder and builds `snakemake sweeps` (the teachers, every
sweep point and the student alone, each sweep's table and chart) from nothing, then prints the
same timings as benchmarks/demo_pipeline.py and the sweep tables. Exit status 2 when over budget.
"""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_pipeline import bench_main  # noqa: E402

BUDGET_S = 300
CONFIGFILES = ("presets/demo.yaml", "presets/sweep-demo.yaml")


def print_sweep_tables(workdir: Path) -> None:
    for path in sorted((workdir / "results" / "tables").glob("sweep_*.csv")):
        table = pd.read_csv(path)
        print(f"\n{path.name}")
        print(table[["method", "role", "value", "seeds", "best_top1_mean", "best_top1_std"]].round(2).to_string(index=False))


def main() -> int:
    return bench_main(__doc__.splitlines()[0], target="sweeps", configfiles=CONFIGFILES, budget_s=BUDGET_S,
                      after=print_sweep_tables)


if __name__ == "__main__":
    sys.exit(main())
