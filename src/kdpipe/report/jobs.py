"""Report appendix: every job's wall time, peak memory and where it ran."""

import pandas as pd

from kdpipe.report.layout import ROWS_PER_PAGE, heading, page, save, table, text


def jobs_appendix(pdf, jobs: pd.DataFrame) -> None:
    columns = ["rule", "job", "wall s", "peak RSS MB", "CPU s", "device", "host"]
    rows = [[r["rule"], r["job"], f"{r['wall_s']:.1f}", f"{r['max_rss_mb']:.0f}", f"{r['cpu_s']:.1f}",
             str(r["device"]) if pd.notna(r["device"]) else "", str(r["host"]) if pd.notna(r["host"]) else ""]
            for _, r in jobs.iterrows()]
    for start in range(0, max(len(rows), 1), ROWS_PER_PAGE):
        fig = page()
        heading(fig, "A. Appendix: jobs")
        text(fig, 0.92, "Wall time, peak resident memory and CPU time from Snakemake's benchmark files; "
                         "device and host from each training job's metrics.json.", size=9)
        chunk = rows[start:start + ROWS_PER_PAGE]
        table(fig, [0.03, 0.05, 0.94, 0.84], columns, chunk, size=6.5)
        save(pdf, fig)
