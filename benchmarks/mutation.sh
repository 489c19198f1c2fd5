#!/usr/bin/env bash
# Mutation testing, module by module ([tool.mutmut] in pyproject.toml says what and with which
# tests; benchmarks/MUTATION.md holds the last report). Not part of CI: it takes about an hour.
#
#   benchmarks/mutation.sh                      # every module in MODULES below
#   benchmarks/mutation.sh s9tune.outdir        # one module (dotted, as mutmut names them)
#   FRESH=1 benchmarks/mutation.sh              # drop mutants/ first (after a merge, say)
#   CHILDREN=1 benchmarks/mutation.sh ...       # mutants tested at once (default 2)
#
# mutmut copies s9tune/ and tests/ into ./mutants/, runs the selected tests once to learn which
# test calls which function, then runs, for each mutant, only the tests that call its function.
# Results are kept in mutants/ (a changed function's mutants are tested again, the rest are
# not); a module named on the command line is always tested again in full. Afterwards:
#   mutmut results                  # survivors by name
#   mutmut show NAME                # a mutant's diff
#   python benchmarks/mutation_report.py   # the per-module table of benchmarks/MUTATION.md
set -euo pipefail
cd "$(dirname "$0")/.."

MUTMUT=${MUTMUT:-mutmut}
CHILDREN=${CHILDREN:-2}
MODULES=(
    s9tune.data
    s9tune.engine
    s9tune.search.searcher.halving
    s9tune.outdir
    s9tune.search.searcher.asha
    s9tune.search.searcher.reeval
    s9tune.search.searcher.searcher
    s9tune.search.searcher.journal
    s9tune.search.experiment.trials
    s9tune.search.experiment.export
)
if [[ $# -gt 0 ]]; then MODULES=("$@"); fi

# mutmut puts mutants/ first on sys.path; a PYTHONPATH naming this tree would not shadow it, but
# one naming another checkout could. One thread per test process: the children share the cores.
# A fixed hash seed: a test whose made-up values depend on hash() then gives the same verdict on
# every run.
unset PYTHONPATH
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0
export S9TUNE_MINI_DIR=${S9TUNE_MINI_DIR:-$(cd .. && pwd)/shared/data/cifar10-mini}

if [[ -n "${FRESH:-}" ]]; then rm -rf mutants; fi
mkdir -p mutants
for module in "${MODULES[@]}"; do
    start=$(date +%s)
    # mutmut exits 0 with survivors; a failed clean run or setup exits non-zero and stops here
    "$MUTMUT" run --max-children "$CHILDREN" "${module}.*"
    end=$(date +%s)
    printf '%s\t%s\t%s\t%s\n' "$module" "$((end - start))" "$(date -Iseconds)" "$(cut -d' ' -f1-3 /proc/loadavg)" \
        | tee -a mutants/timings.tsv
done
