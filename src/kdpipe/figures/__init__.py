"""Figures (matplotlib, PNG): one module per report section."""
