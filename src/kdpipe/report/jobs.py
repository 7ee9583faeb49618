"""Report appendix: every job's wall time, peak memory, where it ran, how (precision, CUDA graphs) and
what it cost (device-hours, kdpipe.tables.cost)."""

import pandas as pd

from kdpipe.report.layout import ROWS_PER_PAGE, heading, page, save, table, text


def _cell(r, key) -> str:
    return str(r[key]) if key in r and pd.notna(r[key]) else ""


def _num(r, key, spec: str) -> str:
    return format(r[key], spec) if key in r and pd.notna(r[key]) else ""


def cost_cell(r) -> str:
    """What a training job counts: '0.0208 GPU-h', '0.0156 GPU-h ÷1.33' when it shared its GPU with
    1.33 jobs on average, '0 (imported)'; empty for other jobs."""
    if not ("cost_h" in r and pd.notna(r["cost_h"])):
        return ""
    if str(r.get("imported")) == "True":
        return "0 (imported)"
    shared = f" ÷{r['shared_by']:.2f}" if "shared_by" in r and pd.notna(r["shared_by"]) and r["shared_by"] > 1.005 else ""
    return f"{r['cost_h']:.3g} {r['cost_on']}-h{shared}"


def jobs_appendix(pdf, jobs: pd.DataFrame) -> None:
    columns = ["rule", "job", "wall s", "peak RSS MB", "CPU s", "device", "host", "precision", "graphs", "cost"]
    rows = [[r["rule"], r["job"], _num(r, "wall_s", ".1f"), _num(r, "max_rss_mb", ".0f"), _num(r, "cpu_s", ".1f"),
             _cell(r, "device"), _cell(r, "host"), _cell(r, "precision"), _cell(r, "cuda_graphs"), cost_cell(r)]
            for _, r in jobs.iterrows()]
    for start in range(0, max(len(rows), 1), ROWS_PER_PAGE):
        fig = page()
        heading(fig, "A. Appendix: jobs")
        y = text(fig, 0.92, "Wall time, peak resident memory and CPU time from Snakemake's benchmark files; device, "
                            "host, precision, CUDA graphs (yes/no) and cost from each training job's metrics.json. "
                            "Cost: the job's time on its device (from claiming it to finishing), ÷k while k jobs "
                            "shared its GPU (÷: how many on average); CPU jobs count CPU-hours; an imported teacher "
                            "costs 0.", size=8, width=120)
        chunk = rows[start:start + ROWS_PER_PAGE]
        table(fig, [0.03, 0.05, 0.94, y - 0.07], columns, chunk, size=6)
        save(pdf, fig)
