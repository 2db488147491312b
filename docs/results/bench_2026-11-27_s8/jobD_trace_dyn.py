"""Session 8: raw jax.profiler traces of one pass of standard and dynamic evaluation (bench_ref),
with the pass's wall time, written to $OUT for analysis off the GPU machine."""
import glob, json, os, shutil, sys, tempfile, time
import jax
sys.path.insert(0, "bench")
from eval_cost import _documents
from fwl_jax.cli import parse_config_flags
from fwl_jax.eval import DynamicScorer, DynamicSettings, WindowScorer, score_split
from fwl_jax.models import make_mesh
from fwl_jax.train.step import Trainer

tag = sys.argv[1]
config = parse_config_flags(["x", "--config=" + os.environ.get("CONFIG", "configs/bench_ref.py")]).config
mesh = make_mesh(devices=jax.devices()[:1])
L = config.data.seq_len; split = _documents(16, 2 * L, config.data.vocab_size)
out = {}
for name in ("standard", "dynamic"):
    trainer = Trainer(config, mesh)
    with trainer.context():
        params = trainer.init_state(0).params
        scorer = (DynamicScorer(trainer.model, mesh, DynamicSettings(L // 8, lr=1e-5, merge_every=2))
                  if name == "dynamic" else WindowScorer(trainer.model, mesh))
        run = lambda: score_split(scorer, params, split, seq_len=L, batch_size=16)[0].nll
        run(); run()
        t = time.perf_counter(); run(); wall = time.perf_counter() - t
        d = tempfile.mkdtemp()
        with jax.profiler.trace(d):
            t = time.perf_counter(); run(); traced_wall = time.perf_counter() - t
        path = glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0]
        import gzip
        with open(path, "rb") as fi, gzip.open(f"{os.environ['OUT']}/{tag}_{name}.xplane.pb.gz", "wb") as fo:
            shutil.copyfileobj(fi, fo)
        out[name] = {"wall_s": wall, "traced_wall_s": traced_wall}
        print(name, out[name], flush=True)
json.dump(out, open(f"{os.environ['OUT']}/{tag}_walls.json", "w"))
