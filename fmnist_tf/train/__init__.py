"""Training: one fit() for every task, its callbacks and the run-directory contract."""
