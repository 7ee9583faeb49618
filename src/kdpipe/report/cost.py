"""What each number cost, as the report prints it (kdpipe.tables.cost makes the figures)."""

import pandas as pd

from kdpipe.tables.cost import _h

COST_HEADER = "cost per model\n(Δ per hour)"
COST_NOTE = ("Cost per model: its training job's time on its device (GPU-hours, or CPU-hours of wall time where it "
             "ran on the CPU), mean over seeds, plus its share of its teacher's (the teacher's divided among the "
             "students that learn from it; an imported teacher costs 0); a job that shared a GPU with k−1 others "
             "counts 1/k of that time. Δ per hour: the gain over the student alone divided by that cost.")


def has_cost(summary: pd.DataFrame) -> bool:
    """Whether the summary carries cost columns (one made before kdpipe counted them does not)."""
    return "cost_unit" in summary.columns


def cost_cell(r: pd.Series, when: str) -> str:
    """'1 GPU-h (+3.5/h)': one model's cost in its unit and the gain over the student alone per hour."""
    unit = r.get("cost_unit")
    if not isinstance(unit, str) or not unit:
        imported = isinstance(r.get("imported_from"), str) and r["imported_from"]
        return "0 (imported)" if imported else "–"
    hours = r["cost_gpu_h"] if unit == "GPU-h" else r["cost_cpu_h"]
    gain = r.get(f"{when}_top1_gain_per_h")
    if gain is None or pd.isna(gain):
        rate = ""
    else:  # no exponent: minutes of CPU make large rates
        rate = f" ({gain:+.3g}/h)" if abs(gain) < 1000 else f" ({gain:+,.0f}/h)"
    return f"{_h(hours)} {unit}{rate}"
