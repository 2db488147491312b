"""Training throughput on 1, 2, 4, ... devices of one host, data-parallel and FSDP, with the
same batch per device: tokens/s per device and its ratio to one device's (the scaling
efficiency), side by side in one run.

For each device count n (`--devices`, those over the host's count are skipped) and each
layout (`--layouts`: `data` = mesh (n, 1, 1), parameters replicated, gradients all-reduced;
`fsdp` = mesh (1, n, 1), parameters and optimizer state sharded over the devices;
`fsdp_tp2` = mesh (1, n/2, 2), FSDP with tensor parallelism 2, for even n) the jit-compiled
train step of `--config` runs on a global batch of n x `train.batch_size` random rows
(`--documents` documents packed in each, with segment ids as `train.py`'s input pipeline
passes them: 2 or more take the attention's masked path; 1 and 0 (no ids) the unmasked one,
as `Trainer.global_batch` drops the ids of rows that are each one document), timed over
`--steps` after `--warmup`. Each row also gives the MFU (`flops_per_token` and
the device's peak, where known) and the compiled step's memory on one device as XLA plans it
(arguments + outputs + temporaries - donated: the parameters' and optimizer state's shards,
the batch's, the activations), so FSDP's saving shows (the allocator's process-wide peak would
carry the largest earlier row's into every later one).

Usage: python bench/scaling.py --config=configs/bench_ref.py [--config.FIELD=VALUE ...]
           [--devices=1,2,4] [--layouts=data,fsdp,fsdp_tp2] [--documents=1] [--steps=10] [--warmup=2]
           [--json=PATH]
"""

import sys

import jax
from absl import flags

from fwl_jax.cli import parse_config_flags
from fwl_jax.models import flops_per_token, make_mesh
from fwl_jax.timing import mean_seconds, random_batch, write_json
from fwl_jax.train.distributed import TRAINING_FLAGS, add_xla_flags
from fwl_jax.train.metrics import peak_tflops
from fwl_jax.train.step import Trainer

LAYOUTS = {"data": lambda n: {"data": n, "fsdp": 1}, "fsdp": lambda n: {"data": 1, "fsdp": n},
           "fsdp_tp2": lambda n: {"data": 1, "fsdp": n // 2, "tensor": 2}}


def _extra(values):
    flags.DEFINE_list("devices", ["1", "2", "4"], "device counts", flag_values=values)
    flags.DEFINE_list("layouts", ["data", "fsdp"], f"mesh layouts, of {','.join(LAYOUTS)}", flag_values=values)
    flags.DEFINE_integer("documents", 1, "documents packed in each row, with segment ids (0: none, no mask)",
                         flag_values=values)
    flags.DEFINE_integer("steps", 10, "timed steps", flag_values=values)
    flags.DEFINE_integer("warmup", 2, "untimed steps (compilation)", flag_values=values)
    flags.DEFINE_string("json", None, "write the table here", flag_values=values)


def throughput(config, layout: str, n: int, steps: int, warmup: int, documents: int = 1) -> dict:
    """Tokens/s of the train step on the first n devices in `layout`."""
    mesh = make_mesh(**LAYOUTS[layout](n), devices=jax.devices()[:n])
    trainer = Trainer(config, mesh)
    state = trainer.init_state(0)
    rows = config.train.batch_size * n
    batch = trainer.global_batch(random_batch(rows, config.data.seq_len, config.data.vocab_size, documents))
    rng = jax.random.key(0)
    box = [state]

    def train():
        box[0], metrics = trainer.train_step(box[0], batch, rng)
        return metrics["loss"]
    seconds = mean_seconds(train, steps, warmup)
    tokens = rows * config.data.seq_len
    row = {"layout": layout, "devices": n, "step_ms": 1e3 * seconds, "tokens_per_s": tokens / seconds,
           "tokens_per_s_per_device": tokens / seconds / n}
    peak = peak_tflops(config.log.peak_tflops)
    if peak:
        micro_batch = rows // config.train.grad_accum_steps  # the global rows the model traces
        flops = flops_per_token(trainer.model_config, config.data.seq_len, batch_size=micro_batch)
        row["mfu"] = flops * row["tokens_per_s_per_device"] / (peak * 1e12)
    with trainer.context():  # the timed step's program: its sharding rules too (cuDNN's partitioner needs them)
        analysis = trainer._train.lower(box[0], batch, rng).compile().memory_analysis()
    if analysis is not None:  # one device's, as XLA plans it
        row["gib_per_device"] = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                                 + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes) / 2**30
        row["argument_gib_per_device"] = analysis.argument_size_in_bytes / 2**30  # state and batch shards
    return row


def main(argv=None) -> dict:
    add_xla_flags(TRAINING_FLAGS)  # as train.py sets them (before JAX starts its backend)
    values = parse_config_flags(argv or sys.argv, _extra)
    if not 0 <= values.documents <= values.config.data.seq_len:
        raise SystemExit(f"error: --documents must be 0 (no segment ids) or 1..data.seq_len "
                         f"({values.config.data.seq_len}), got {values.documents}")
    config = values.config
    unknown = sorted(set(values.layouts) - set(LAYOUTS))
    if unknown:
        raise SystemExit(f"error: unknown layouts {unknown}; choose from {','.join(LAYOUTS)}")
    counts = sorted({int(n) for n in values.devices})
    available = jax.device_count()
    skipped = [n for n in counts if n > available]
    counts = [n for n in counts if n <= available]
    if 1 not in counts:
        counts.insert(0, 1)  # the base of the efficiencies
    rows = []
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "device_count": available, "batch_per_device": config.train.batch_size,
              "seq_len": config.data.seq_len, "documents_per_row": values.documents, "skipped_counts": skipped,
              "rows": rows}
    print(f"{report['device']} x {available}, jax {report['jax']}, {config.train.batch_size} rows of "
          f"{config.data.seq_len} per device" + (f"; skipped counts {skipped} (too few devices)" if skipped else ""))
    print("layout | devices | step ms | tokens/s | per device | efficiency | MFU | GiB/device", flush=True)
    base = throughput(config, "data", 1, values.steps, values.warmup, values.documents)
    for layout in values.layouts:
        for n in counts:
            if layout == "fsdp_tp2" and n % 2:
                continue
            row = base if n == 1 else throughput(config, layout, n, values.steps, values.warmup, values.documents)
            r = {**row, "layout": layout, "efficiency": row["tokens_per_s_per_device"] / base["tokens_per_s_per_device"]}
            rows.append(r)  # printed and written as it comes, so a cut run keeps what it measured
            mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
            memory = f"{r['gib_per_device']:.2f}" if "gib_per_device" in r else "-"
            print(f"{r['layout']} | {r['devices']} | {r['step_ms']:.2f} | {r['tokens_per_s']:,.0f} | "
                  f"{r['tokens_per_s_per_device']:,.0f} | {r['efficiency']:.1%} | {mfu} | {memory}", flush=True)
            write_json(report, values.json)
    return report


if __name__ == "__main__":
    main()
