#!/bin/bash
# A/B on the plain train step: XLA's dot merger off (--xla_gpu_dot_merger_threshold_mb=0) against the default; HEAD's compiled train step text.
source .gpujob/common.sh
T="python .gpujob/trainonly.py"
step d1 $T $R/train_hlo.txt
XLA_FLAGS=--xla_gpu_dot_merger_threshold_mb=0 step m1 $T $R/train_hlo_nomerge.txt
step d2 $T
XLA_FLAGS=--xla_gpu_dot_merger_threshold_mb=0 step m2 $T
gzip $R/*.txt.gz 2>/dev/null; gzip $R/train_hlo*.txt
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
