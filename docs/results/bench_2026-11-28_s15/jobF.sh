#!/bin/bash
# A/B: the vectors' AdamW on one flattened vector (optax.partition + optax.flatten) against HEAD; then a full op profile of HEAD's plain step.
source .gpujob/common.sh
B=/tmp/snap/.gpujob/grouped
other() { (cd $B && PYTHONPATH=/tmp/site:$B "$@"); }
S="python bench/step.py --config=configs/bench_ref.py --variants=plain"
step head1 $S --json=$R/head1.json
step grouped1 other $S --json=$R/grouped1.json
step head2 $S --json=$R/head2.json
step grouped2 other $S --json=$R/grouped2.json
XLA_FLAGS=--xla_gpu_enable_command_buffer= step profile $S --profile=1500 --steps=3 --json=$R/profile.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
