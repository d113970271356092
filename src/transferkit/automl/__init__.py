"""Hyper-parameter search over any spec keys with Optuna (`tkit <task> automl`), shared by every task.

config.py: the `automl` spec section and the check of its search space; study.py: the study, its workers and
trials (each a `train` run); report.py: trials.csv, best_spec.yaml, metrics.json, plots and TensorBoard.
"""
