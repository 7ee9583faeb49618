"""Tables (pandas) from metrics.json and benchmark files: one module per report section."""

import pandas as pd


def seed_stats(values: pd.Series) -> tuple[float, float]:
    """Mean and sample std over seeds; the std of a single seed is NaN (shown without ± in the report)."""
    return values.mean(), values.std(ddof=1) if len(values) > 1 else float("nan")
