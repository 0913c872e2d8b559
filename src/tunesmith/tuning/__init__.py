"""The machinery of `tunesmith tune`: the search space and its settings, the Optuna study, the trials'
records and the choice among them, the trade-off plot. The recipe is `tunesmith/tune.py`."""
