"""Ray glue: joining a cluster and checking it (`cluster.py`), the one `tune.run` of a search
(`runner.py`), the trainable (`trainable.py`), TensorBoard's HParams rows (`hparams.py`), the
console (`console.py`), Ray's log file (`logfile.py`), retrain's seeds as Tune trials
(`retrain_seeds.py`), what a trial reports (`reporting.py`), and the one home of private Ray names (`ray_compat.py`)."""
