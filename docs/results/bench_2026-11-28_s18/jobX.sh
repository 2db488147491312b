#!/bin/bash
# Session 18, job X (two H200s, about 1 minute): the shardings cuDNN's partitioner sees under FSDP; the GPU tests.
source .gpujob/common.sh
step diag python .gpujob/fsdpdiag.py
step gpu_tests env FWL_TEST_GPU=1 python -m pytest -o addopts="" -q -p no:cacheprovider tests/test_attention.py -k "sharded"
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
