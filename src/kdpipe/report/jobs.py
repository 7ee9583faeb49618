"""Report appendix: every job's wall time, peak memory, where it ran, how (precision, CUDA graphs) and
what it cost (device-hours, kdpipe.tables.cost)."""

import pandas as pd

from kdpipe.report.layout import ROWS_PER_PAGE, heading, page, save, table, text


def _cell(r, key) -> str:
    return str(r[key]) if key in r and pd.notna(r[key]) else ""


def _num(r, key, spec: str) -> str:
    return format(r[key], spec) if key in r and pd.notna(r[key]) else ""


def cost_cell(r) -> str:
    """What a training job counts: '0.0208 GPU-h', '0 (imported)'; empty for other jobs."""
    if not ("cost_h" in r and pd.notna(r["cost_h"])):
        return ""
    if str(r.get("imported")) == "True":
        return "0 (imported)"
    return f"{r['cost_h']:.3g} {r['cost_on']}-h"


def jobs_appendix(pdf, jobs: pd.DataFrame) -> None:
    columns = ["rule", "job", "wall s", "peak RSS MB", "CPU s", "device", "host", "precision", "graphs",
               "on device s", "shared by", "cost"]
    rows = [[r["rule"], r["job"], _num(r, "wall_s", ".1f"), _num(r, "max_rss_mb", ".0f"), _num(r, "cpu_s", ".1f"),
             _cell(r, "device"), _cell(r, "host"), _cell(r, "precision"), _cell(r, "cuda_graphs"),
             _num(r, "device_s", ".1f"), _num(r, "shared_by", ".2f"), cost_cell(r)]
            for _, r in jobs.iterrows()]
    for start in range(0, max(len(rows), 1), ROWS_PER_PAGE):
        fig = page()
        heading(fig, "A. Appendix: jobs")
        text(fig, 0.92, "Wall time, peak resident memory and CPU time from Snakemake's benchmark files; "
                         "device, host, precision and CUDA graphs (yes/no) from each training job's metrics.json. "
                         "Cost: a training job's time on its device (from claiming it to finishing), divided among "
                         "the jobs that ran on the same GPU at the same time ('shared by': how many on average); "
                         "CPU jobs count their wall time as CPU-hours; an imported teacher costs 0.", size=9)
        chunk = rows[start:start + ROWS_PER_PAGE]
        table(fig, [0.03, 0.05, 0.94, 0.84], columns, chunk, size=6)
        save(pdf, fig)
