#!/bin/bash
# FWL variants' train step: XLA's dot merger off against the default (one sample each).
source .gpujob/common.sh
T="python .gpujob/trainonly.py"
VARIANT=fwl_full step fd $T
VARIANT=fwl_full XLA_FLAGS=--xla_gpu_dot_merger_threshold_mb=0 step fm $T
VARIANT=fwl_first_order step od $T
VARIANT=fwl_first_order XLA_FLAGS=--xla_gpu_dot_merger_threshold_mb=0 step om $T
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
