"""One training loop for every model family, and the families it trains."""
