#!/bin/bash
# A/B: the MLP activation recomputed in the backward (new) against session 13's code (base), one H100.
source .gpujob/common.sh
B=/tmp/snap/.gpujob/base
base() { (cd $B && PYTHONPATH=/tmp/site:$B "$@"); }
step new1 python bench/step.py --config=configs/bench_ref.py --variants=plain --json=$R/new1.json
step base1 base python bench/step.py --config=configs/bench_ref.py --variants=plain --json=$R/base1.json
step new2 python bench/step.py --config=configs/bench_ref.py --variants=plain,fwl_full,fwl_first_order --json=$R/new2.json
step base2 base python bench/step.py --config=configs/bench_ref.py --variants=plain --json=$R/base2.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
