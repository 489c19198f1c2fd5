"""Reading an experiment at STORAGE/NAME without running anything in it: where it lives and
s9tune's record (`record.py`), Tune's plain files (`tune_files.py`), the trials, the ranking and
the pick as values (`trials.py`), and what `results` writes and prints (`export.py`)."""
