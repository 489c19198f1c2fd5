"""Ray Tune search: the only package that imports ray or optuna.

- `space/`: the space file, parsed and checked before Ray starts;
- `searcher/`: the Ray Searcher over Optuna, its journal, halving, re-evaluation, the pick's
  statistics (`pick.py`) and ASHA for reruns;
- `experiment/`: reading an experiment (record, Tune's files, trials, results files);
- `execution/`: the Ray glue (cluster, runner, trainable, console, HParams, retrain's seeds);
- `outcome.py`: what became of a run (completed, stopped, diverged, error, unfinished), the one
  rule the searcher, the console, the experiment's files and retrain's seeds share.
"""
