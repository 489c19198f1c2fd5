"""The searcher: s9tune's Ray `Searcher` over Optuna ask-and-tell (`searcher.py`), the Optuna
journal it keeps its state in (`journal.py`), successive halving's bookkeeping (`halving.py`),
the re-evaluation of the top configs (`reeval.py`), how sure a pick is (`pick.py`), and Ray's
ASHA that leaves reruns alone (`asha.py`)."""
