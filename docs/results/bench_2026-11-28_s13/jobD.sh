#!/bin/bash
# Session 13, job D (one H100): the plain step with chunks of 512 (the default) and with the whole window's logits; then where the plain step's time goes on the H100 (op profile, command buffers off).
source .gpujob/common.sh
step plain_default python bench/step.py --config=configs/bench_ref.py --variants=plain --json=$R/plain_default.json
step plain_chunk1024 python bench/step.py --config=configs/bench_ref.py --variants=plain --config.fwl.unembed_chunk=1024 --json=$R/plain_chunk1024.json
step plain_profile env XLA_FLAGS=--xla_gpu_enable_command_buffer= python bench/step.py --config=configs/bench_ref.py --variants=plain --profile=800 --json=$R/plain_profile.json
echo "done $(date -u)" >> $R/progress.txt
touch $R/DONE
