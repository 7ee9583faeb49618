"""Report appendix: every job's wall time, peak memory, where it ran and how (precision, CUDA graphs)."""

import pandas as pd

from kdpipe.report.layout import ROWS_PER_PAGE, heading, page, save, table, text


def _cell(r, key) -> str:
    return str(r[key]) if key in r and pd.notna(r[key]) else ""


def jobs_appendix(pdf, jobs: pd.DataFrame) -> None:
    columns = ["rule", "job", "wall s", "peak RSS MB", "CPU s", "device", "host", "precision", "graphs"]
    rows = [[r["rule"], r["job"], f"{r['wall_s']:.1f}", f"{r['max_rss_mb']:.0f}", f"{r['cpu_s']:.1f}",
             _cell(r, "device"), _cell(r, "host"), _cell(r, "precision"), _cell(r, "cuda_graphs")]
            for _, r in jobs.iterrows()]
    for start in range(0, max(len(rows), 1), ROWS_PER_PAGE):
        fig = page()
        heading(fig, "A. Appendix: jobs")
        text(fig, 0.92, "Wall time, peak resident memory and CPU time from Snakemake's benchmark files; "
                         "device, host, precision and CUDA graphs (yes/no) from each training job's metrics.json.", size=9)
        chunk = rows[start:start + ROWS_PER_PAGE]
        table(fig, [0.03, 0.05, 0.94, 0.84], columns, chunk, size=6.5)
        save(pdf, fig)
