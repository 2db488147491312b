"""Host-side input pipeline throughput from prepared data (no accelerator involved).

Prepares the dataset if needed, then times `train_iterator` (packed, shuffled rows read
ahead by grain threads) and `eval_batches` (document windows in lanes): tokens/s of real
targets (weight 1) delivered to the caller after a warm-up.

Usage: python bench/data_pipeline.py --data_dir=DIR [--dataset=shakespeare] [--vocab_size=8000]
           [--seq_len=1024] [--batch_size=32] [--batches=300] [--source=PATH] [--json=PATH]
"""

import argparse
import os
import platform
import time

from fwl_jax.data import pipeline, prepare
from fwl_jax.timing import write_json


def _rate(batches, count: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        next(batches)
    start, tokens = time.perf_counter(), 0
    for _ in range(count):
        tokens += int(next(batches)["weights"].sum())
    return tokens / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--dataset", default="shakespeare")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--source", default=None)
    parser.add_argument("--seq_len", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    data = prepare.prepare_dataset(args.dataset, args.data_dir, vocab_size=args.vocab_size,
                           source=args.source)
    train = pipeline.train_iterator(data.split("train"), args.seq_len, args.batch_size,
                                    num_threads=args.threads)
    evaluation = pipeline.eval_batches(data.split("validation"), args.seq_len,
                                       args.batch_size)
    eval_steps = len(pipeline.eval_schedule(data.split("validation"), args.seq_len,
                                            args.batch_size))
    report = {
        "dataset": args.dataset, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "train_tokens_per_s": _rate(train, args.batches),
        "eval_tokens_per_s": _rate(evaluation, max(eval_steps - 2, 1), warmup=1),
    }
    print(f"{'pipeline':8s} {'tokens/s':>14s}")
    for name in ("train", "eval"):
        print(f"{name:8s} {report[name + '_tokens_per_s']:14,.0f}")
    write_json(report, args.json)
    return report


if __name__ == "__main__":
    main()
