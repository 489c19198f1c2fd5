"""Ray Tune search: the only package that imports ray or optuna."""
