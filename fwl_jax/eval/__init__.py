"""Evaluation: whole-document scoring with carried fast-weight state, reports, per-token
results and comparison figures."""

from fwl_jax.eval.compare import compare, gains_table
from fwl_jax.eval.dynamic import DynamicScorer, DynamicSettings, mean_squared_gradients
from fwl_jax.eval.program import MODES, evaluate_run, parse_step_sizes, with_step_sizes
from fwl_jax.eval.results import load_tokens, prior_occurrences, token_frequencies
from fwl_jax.eval.scoring import CARRY_POLICIES, Timing, TokenScores, WindowScorer, score_split

__all__ = ["CARRY_POLICIES", "DynamicScorer", "DynamicSettings", "MODES", "Timing", "TokenScores",
           "WindowScorer", "compare", "evaluate_run", "gains_table", "load_tokens",
           "mean_squared_gradients", "parse_step_sizes", "prior_occurrences", "score_split",
           "token_frequencies", "with_step_sizes"]
