#!/bin/bash
# A/B: the body's LayerNorm with two-pass variance (mean, then mean of squared deviations) against HEAD, one H100.
source .gpujob/common.sh
B=/tmp/snap/.gpujob/ln2
other() { (cd $B && PYTHONPATH=/tmp/site:$B "$@"); }
step head python bench/step.py --config=configs/bench_ref.py --variants=plain --json=$R/head.json
step ln2 other python bench/step.py --config=configs/bench_ref.py --variants=plain --json=$R/ln2.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
