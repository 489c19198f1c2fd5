"""The search space: a YAML file parsed and checked before Ray starts (`space.py`), its
distributions (`dists.py`), its `scheduler` and `reevaluate` sections (`sections.py`), and the
checks they share (`checks.py`)."""
