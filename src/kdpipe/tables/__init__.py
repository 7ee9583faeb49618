"""Tables (pandas) from metrics.json and benchmark files: one module per report section."""
