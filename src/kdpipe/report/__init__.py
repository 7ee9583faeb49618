"""results/report.pdf from the tables and figures."""
