"""Figures (DataFrame → plotly Figure, pure) and the one-file HTML report."""
