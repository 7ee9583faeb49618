"""The smallest inputs `kdpipe report` reads, for tests of what the report builder does around its
sections (files, links, sweeps): stub tables, and every section replaced by nothing."""

from pathlib import Path

import pandas as pd

SECTIONS = ("kd_section", "self_distill_section", "autoencoder_section", "reproduction_section", "jobs_appendix")


def write_stub_tables(tables: Path) -> None:
    """The tables build_report reads, each with the columns its title page reads."""
    tables.mkdir(parents=True, exist_ok=True)
    for name in ("kd_summary", "self_distill_summary", "autoencoder_summary", "kd_runs", "self_distill_runs",
                 "autoencoder_runs"):
        pd.DataFrame({"git_commit": ["abc"], "device": ["cpu"], "host": ["h"], "method": ["alone"]}).to_csv(
            tables / f"{name}.csv", index=False)
    pd.DataFrame({"wall_s": [60.0], "cpu_s": [30.0]}).to_csv(tables / "jobs.csv", index=False)
    pd.DataFrame({"entry": []}).to_csv(tables / "reproduction.csv", index=False)


def skip_sections(monkeypatch) -> None:
    """Every section of the report drawn as nothing (the sections have their own tests)."""
    import kdpipe.report.build as build

    for section in SECTIONS:
        monkeypatch.setattr(build, section, lambda *a: None)
