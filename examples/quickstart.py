# %% [markdown]
# # s9tune quickstart: search, read the trials, retrain the pick
#
# A notebook as a script (`# %%` cells: open it in VS Code or Jupyter with jupytext, or run
# `python examples/quickstart.py`). It uses s9tune's Python API only. Everything it writes goes
# under the folder it is run from: `searches/` (the experiment) and `runs/` (the retrain).
#
#     python examples/quickstart.py [--data-dir D] [--num-samples N]
#
# `--data-dir` defaults to the 5,085-image CIFAR-10 slice in `../shared/data/cifar10-mini`
# beside the repository; without it there, give a folder holding `cifar-10-batches-py/` (or one
# to download CIFAR-10 into). About a minute and a half on 2 CPU cores.

# %%
from __future__ import annotations

import argparse
import time
from pathlib import Path

import s9tune

# the repository: this file's folder's parent (a notebook has no __file__: run it from the repo)
REPO = Path(__file__).resolve().parents[1] if "__file__" in globals() else Path.cwd()
parser = argparse.ArgumentParser(description="s9tune quickstart: search, read the trials, retrain the pick")
parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "cifar10-mini")
parser.add_argument("--num-samples", type=int, default=None, help="configs to search (default: the space file's)")
args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own

# %% [markdown]
# ## 1. Search
# `search_spaces/smoke.yaml` searches max LR, pct_start and augmentation strength for a width-16
# net on 1,536 training images: 6 configs on a complete 1-epoch schedule, the best third again
# on the complete 4-epoch one. Ray starts in-process; its own output goes to the experiment's
# `search.log`.

# %%
name = f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
exp = s9tune.run_search(
    s9tune.SearchOptions(
        space=REPO / "search_spaces" / "smoke.yaml",
        data_dir=args.data_dir,
        num_samples=args.num_samples,
        name=name,
        progress=False,  # a notebook shows the tables below instead of the live view
    )
)
print(exp.path)

# %% [markdown]
# ## 2. The trials, as a DataFrame
# One row per Tune trial (under halving, one run of a config at one budget), best first:
# its searched values, its validation accuracy and its status.

# %%
trials = exp.trials
print(trials[["trial", "config", "budget", "max_lr", "pct_start", "aug_strength", "last_val_accuracy", "status"]])

# %% [markdown]
# ## 3. The pick
# The config with the best validation accuracy at the end of the longest complete schedule;
# `best_config` is its whole TrainConfig (the space's fixed values plus the searched ones).

# %%
pick = exp.pick
print(f"picked trial {pick.trial_id}: {100 * pick.val_accuracy:.2f}% val over {pick.seeds} run(s), {pick.params}")
print(exp.best_config)

# %% [markdown]
# ## 4. Retrain the pick
# On train + validation, scored on the test set; 1 epoch here to keep the example short (the
# real retrain is 24). The run folder gets the analysis: plots, GradCAM, report.html.

# %%
run = s9tune.retrain(
    s9tune.RetrainOptions(experiment=exp.path, out="runs/" + name, data_dir=args.data_dir, epochs=1, progress=False)
)
m = run.metrics
print(f"test accuracy {100 * m['test_accuracy']:.2f}% ({m['test_correct']}/{m['test_images']})")
print(f"report: {run.out.child('report.html')}")
