"""Metrics (scikit-learn), plots (matplotlib) and reports."""
