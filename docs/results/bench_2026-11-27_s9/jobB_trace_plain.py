"""Session 9: the raw jax.profiler trace of one pass of dynamic evaluation of the plain model
(bench_ref with fast weights off, as bench/eval_cost.py runs it), written to $OUT."""
import glob, gzip, json, os, shutil, sys, tempfile, time
import jax
sys.path.insert(0, "bench")
from eval_cost import _documents
from fwl_jax.cli import parse_config_flags
from fwl_jax.eval import DynamicScorer, DynamicSettings, score_split
from fwl_jax.models import make_mesh
from fwl_jax.train.step import Trainer

tag = sys.argv[1]
config = parse_config_flags(["x", "--config=configs/bench_ref.py"]).config
with config.unlocked():
    config.model.fwl_enabled = False
mesh = make_mesh(devices=jax.devices()[:1])
L = config.data.seq_len; split = _documents(16, 2 * L, config.data.vocab_size)
trainer = Trainer(config, mesh)
with trainer.context():
    params = trainer.init_state(0).params
    scorer = DynamicScorer(trainer.model, mesh, DynamicSettings(L // 8, lr=1e-5))
    run = lambda: score_split(scorer, params, split, seq_len=L, batch_size=16)[0].nll
    run(); run()
    t = time.perf_counter(); run(); wall = time.perf_counter() - t
    d = tempfile.mkdtemp()
    with jax.profiler.trace(d):
        t = time.perf_counter(); run(); traced = time.perf_counter() - t
    path = glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0]
    with open(path, "rb") as fi, gzip.open(f"/tmp/res/{tag}_dynamic.xplane.pb.gz", "wb") as fo:
        shutil.copyfileobj(fi, fo)
print(tag, {"wall_s": wall, "traced_wall_s": traced}, flush=True)
