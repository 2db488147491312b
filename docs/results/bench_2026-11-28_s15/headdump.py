"""Dump the compiled head step (value and gradient) of plain and fwl_full at bench_ref, with buffer assignment."""
import sys
sys.argv = sys.argv[:1] + ["--config=configs/bench_ref.py"]
from fwl_jax.cli import parse_config_flags
from bench import step as S
values = parse_config_flags(sys.argv, S._extra)
for name in ("plain", "fwl_full"):
    fwl_enabled, meta = S.VARIANTS[name]
    row = S.head_row(S._variant(values.config, fwl_enabled, meta), 3, 1)
    print(name, row, flush=True)
