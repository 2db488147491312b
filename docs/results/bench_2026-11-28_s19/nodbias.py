"""Session 19 experiment: run a bench script with jax's cuDNN attention asked for no bias
gradient (jax 0.10 / 0.11 always export one: `should_export_dbias` returns True).
Usage: python .gpujob/nodbias.py SCRIPT [ARGS...]"""
import runpy
import sys

from jax._src.cudnn import fused_attention_stablehlo as cudnn

cudnn.should_export_dbias = lambda *a: False
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
