"""Dynamic evaluation (Krause et al. 2018, 2019): the model adapts its parameters to the
document by gradient descent as it reads it; the baseline the FWL is meant to replace.

Each window of `seq_len` tokens is read in segments of `segment_len`. A segment is scored
first, with the current parameters and the window's earlier segments as context (their
keys and values kept in the KV cache as they were computed, as Transformer-XL memory is);
then the selected parameters (`all`, `head` or `body`) take one step on the segment's mean
loss. Parameters return to the trained ones at each document start. With fast weights on
(`fwl+dynamic`) the head's state is carried across segments and windows as in `standard`.

Rules, for the selected parameters theta (theta0: the trained values):
  sgd: theta <- theta - lr * g
  rms: theta <- theta - lr * g / (sqrt(ms) + eps) + min(decay * rms_norm, 1) * (theta0 - theta),
       ms the mean squared gradient per parameter over training batches and
       rms_norm = sqrt(ms) / mean(sqrt(ms)) (Krause et al. 2018, eq. 6-8). Our addition:
       sqrt(ms) is floored at `rms_floor` times its tensor's mean. The ms come from a few
       training batches, where a rare token's embedding row and unembedding column get almost
       no gradient (none at all if it is absent), and g / sqrt(ms) for them diverges the moment
       the token appears in the document; `rms_floor=0` is the published rule.
One jit-compiled step per window: a `lax.scan` over its segments (for SGD, over groups of
`merge_every` segments, unrolled in the group), vmapped over the lanes
(documents), each lane with its own copy of the selected parameters. The scorer runs the
model with its layers unrolled and without block rematerialisation (`unrolled`; the same function,
speed-only settings): with `scan_layers` each segment's gradient would be gathered into
zero-filled stacked [layers, lanes, ...] buffers (and transposed) before the update, and a
segment's activations are small enough to keep. With SGD the embedding table's step touches
only the rows of the segment's tokens, and is applied as a scatter into the table (the same
step as the dense gradient's, without a [V, d] gradient per lane and segment), and each
matmul kernel's step is kept as low-rank factors for `merge_every` segments (`_lane_sgd`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from fwl_jax.data import FIELDS
from fwl_jax.models import TransformerLM
from fwl_jax.models.transformer import Dense
from fwl_jax.models.decode import init_cache
from fwl_jax.ops import fwl as fwl_ops

RULES = ("sgd", "rms")
PARTS = ("all", "head", "body")


@dataclasses.dataclass(frozen=True)
class DynamicSettings:
    segment_len: int = 128  # tokens scored before each update
    lr: float = 1e-4  # step size of the update
    rule: str = "sgd"  # sgd or rms
    decay: float = 0.0  # rms: pull toward the trained parameters
    eps: float = 1e-8  # rms: added to sqrt(ms)
    rms_floor: float = 0.1  # rms: sqrt(ms) at least this times its tensor's mean (0: the published rule)
    params: str = "all"  # which parameters adapt: all, head or body
    merge_every: int = 0  # sgd only: segments whose kernel steps stay low-rank factors (0: 2 where it divides)

    def check(self, seq_len: int) -> None:
        if self.rule not in RULES or self.params not in PARTS:
            raise ValueError(f"dynamic rule must be one of {RULES} and params one of {PARTS}, "
                             f"got {self.rule!r}, {self.params!r}")
        if self.segment_len < 1 or seq_len % self.segment_len:
            raise ValueError(f"segment_len {self.segment_len} must divide seq_len {seq_len}")
        segments = seq_len // self.segment_len
        if self.merge_every < 0 or (self.merge_every and segments % self.merge_every):
            raise ValueError(f"merge_every {self.merge_every} must divide the {segments} segments of a "
                             f"window (seq_len / segment_len), or be 0 to choose")

    def group(self, seq_len: int) -> int:
        """Segments per merge of the kernels' low-rank steps: `merge_every`, or for 0 the
        largest divisor of the window's segment count up to 2 (on an H200 at bench_ref, 2 and 4
        ran at the same speed and 1 at 0.86x; 4 compiled longer, 8 did not compile in 5 minutes)."""
        segments = seq_len // self.segment_len
        return self.merge_every or (2 if segments % 2 == 0 else 1)


def unrolled(model: TransformerLM) -> TransformerLM:
    """The same model with its layers unrolled and no block rematerialisation (speed-only settings)."""
    cfg = model.config
    if not cfg.scan_layers and cfg.remat == "none":
        return model
    return TransformerLM(dataclasses.replace(cfg, scan_layers=False, remat="none"))


def unstack_layers(params: dict, num_layers: int) -> dict:
    """Parameters of a `scan_layers` model (``body/layers``, stacked on a leading axis) in the
    layout of the unrolled model (``body/layers_0``, ...); other trees are returned as they are."""
    body = params.get("body")
    if not isinstance(body, dict) or "layers" not in body:
        return params
    layers = body["layers"]
    unstacked = {f"layers_{i}": jax.tree.map(lambda x, i=i: x[i], layers) for i in range(num_layers)}
    return {**params, "body": {**{k: v for k, v in body.items() if k != "layers"}, **unstacked}}


def split_params(params: dict, part: str) -> tuple[dict, dict]:
    """(the adapted parameters, the fixed rest)."""
    if part == "all":
        return params, {}
    return params[part], {k: v for k, v in params.items() if k != part}


def merge_params(selected: dict, rest: dict, part: str) -> dict:
    return selected if part == "all" else {**rest, part: selected}


def rms_scale(ms, rms_floor: float = 0.0):
    """(sqrt(ms) floored at `rms_floor` times its tensor's mean, the mean of that over all
    parameters): the RMS rule's per-parameter denominators and their mean."""
    rms = jax.tree.map(lambda m: jnp.maximum(jnp.sqrt(m), rms_floor * jnp.mean(jnp.sqrt(m))), ms)
    mean_rms = sum(jnp.sum(r) for r in jax.tree.leaves(rms)) / sum(r.size for r in jax.tree.leaves(rms))
    return rms, mean_rms


def rms_step(theta, grad, theta0, rms, mean_rms, *, lr, decay: float, eps: float):
    """One step of the RMS rule given `rms_scale`'s denominators."""
    return jax.tree.map(
        lambda t, g, t0, r: t - lr * g / (r + eps)
        + jnp.minimum(decay * r / mean_rms, 1.0) * (t0 - t), theta, grad, theta0, rms)


def rms_update(theta, grad, theta0, ms, *, lr: float, decay: float, eps: float, rms_floor: float = 0.0):
    """One step of the RMS rule with decay toward theta0 (pytrees of equal structure)."""
    rms, mean_rms = rms_scale(ms, rms_floor)
    return rms_step(theta, grad, theta0, rms, mean_rms, lr=lr, decay=decay, eps=eps)


def sgd_update(theta, grad, *, lr: float):
    return jax.tree.map(lambda t, g: t - lr * g, theta, grad)


def mean_squared_gradients(model: TransformerLM, params: dict, part: str, batches,
                           segment_len: int | None = None) -> dict:
    """Per-parameter mean of the squared gradient of one segment's mean token loss, for the
    `rms` rule: the gradients have the scale of dynamic evaluation's updates. Each row of
    `batches` (dicts of [B, T] arrays, e.g. packed training rows) gives one segment of
    `segment_len` tokens (default T), the n-th row overall taking segment n mod T/segment_len;
    the whole row runs through the model (its earlier tokens are the segment's context, and
    feed the fast weights as in evaluation) and only the segment's tokens enter the loss. Rows
    without a token in their segment are skipped. (Squared gradients of whole-batch means are
    smaller by about the batch's token count over the segment's, and made the RMS steps diverge.)"""
    selected, rest = split_params(params, part)

    @jax.jit
    def squared(selected, batch, first_row):
        length = batch["inputs"].shape[1]
        segment = segment_len or length
        if length % segment:
            raise ValueError(f"segment_len {segment} must divide the rows' length {length}")

        def row_squares(row, index):
            start = (index % (length // segment)) * segment
            inside = (jnp.arange(length) >= start) & (jnp.arange(length) < start + segment)
            weights = row["weights"].astype(jnp.float32)
            in_loss = weights * inside

            def loss(selected):
                ce, _ = model.apply({"params": merge_params(selected, rest, part)},
                                    row["inputs"][None], targets=row["targets"][None], weights=weights[None],
                                    segment_ids=row["segment_ids"][None] if "segment_ids" in row else None,
                                    positions=row["positions"][None],
                                    method=TransformerLM.token_nll)
                return jnp.sum(ce[0] * in_loss) / jnp.maximum(jnp.sum(in_loss), 1.0)
            used = (jnp.sum(in_loss) > 0).astype(jnp.float32)
            return jax.tree.map(lambda g: used * jnp.square(g), jax.grad(loss)(selected)), used

        def add(total, inputs):
            squares, used = row_squares(*inputs)
            return jax.tree.map(jnp.add, total, (squares, used)), None
        zeros = (jax.tree.map(jnp.zeros_like, selected), jnp.zeros((), jnp.float32))
        rows = batch["inputs"].shape[0]
        (total, count), _ = jax.lax.scan(add, zeros, (batch, first_row + jnp.arange(rows)))
        return total, count

    total, count, first_row = None, 0.0, 0
    for batch in batches:
        # (segment ids may be None: Trainer.global_batch drops those of single-document rows)
        sq, used = squared(selected, {k: jnp.asarray(batch[k]) for k in FIELDS if batch[k] is not None}, first_row)
        first_row += batch["inputs"].shape[0]
        total = sq if total is None else jax.tree.map(jnp.add, total, sq)
        count += float(used)
    if not count:
        raise ValueError("no training rows (with tokens) to measure gradients on")
    return jax.tree.map(lambda x: x / count, total)


class DynamicScorer:
    """Scores windows with dynamic evaluation; the carry between windows is
    (each lane's adapted parameters, each lane's fast-weight state)."""

    def __init__(self, model: TransformerLM, mesh, settings: DynamicSettings, *,
                 carry: str = "carry", carry_decay: float = 1.0, ms: dict | None = None):
        settings.check(model.config.max_len)
        if settings.rule == "rms" and ms is None:
            raise ValueError("the rms rule needs the mean squared gradients (ms)")
        self.model, self.mesh, self.settings = unrolled(model), mesh, settings
        self._layout = functools.partial(unstack_layers, num_layers=model.config.num_layers)
        self.rms = None
        if ms is not None:  # floored per tensor as trained (stacked layers), then laid out as the lanes' parameters
            rms, mean_rms = rms_scale(ms, settings.rms_floor)
            rms = self._layout(rms) if settings.params == "all" else self._layout({settings.params: rms})[settings.params]
            self.rms = (rms, mean_rms)
        self.carry, self.carry_decay = carry, carry_decay
        self.sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
        self._step = jax.jit(self._window, donate_argnums=(2,))

    def initial(self, params, lanes: int):
        selected, _ = split_params(self._layout(params), self.settings.params)
        cfg = self.model.config
        lane_params = jax.tree.map(lambda x: jnp.broadcast_to(x, (lanes,) + x.shape), selected)
        state = fwl_ops.init_state(lanes, cfg.d_model, cfg.fwl) if cfg.fwl_enabled else None
        return jax.device_put((lane_params, state), self.sharding)

    def score(self, params, local_batch: dict, carry, keep: np.ndarray):
        put = lambda x: jax.make_array_from_process_local_data(self.sharding, x)  # noqa: E731
        batch = {k: put(local_batch[k]) for k in FIELDS}
        new_doc = put((local_batch["window_index"] == 0).astype(np.float32))
        return self._step(params, batch, carry, put(keep), new_doc)

    def _window(self, params, batch, carry, keep, new_doc):
        s, part = self.settings, self.settings.params
        theta0, rest = split_params(self._layout(params), part)
        lane_params, state = carry

        def reset(lane_params):  # lanes that start a document take the trained parameters
            return jax.tree.map(lambda t, t0: jnp.where(new_doc.reshape((-1,) + (1,) * t0.ndim) > 0, t0[None], t),
                                lane_params, theta0)
        # Most windows start no document (all but the first of each): skip the pass over every
        # lane's parameters then.
        lane_params = jax.lax.cond(jnp.any(new_doc > 0), reset, lambda p: p, lane_params)
        if state is not None:
            state = jax.tree.map(
                lambda x: x * keep.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype), state)
        lanes, length = batch["inputs"].shape
        segments = {k: batch[k].reshape(lanes, length // s.segment_len, s.segment_len)
                    for k in ("inputs", "targets", "weights")}
        nll, lane_params, state = jax.vmap(
            lambda p, st, seg: self._lane(p, st, seg, theta0, rest))(lane_params, state, segments)
        return nll.reshape(lanes, length), (lane_params, state)

    def _lane(self, theta, state, segments, theta0, rest):
        """One document's window: its segments (inputs [K, S]) in order."""
        if self.settings.rule == "sgd":
            return self._lane_sgd(theta, state, segments, rest)
        return self._lane_rms(theta, state, segments, theta0, rest)

    def _segment_nll(self, params, cache, state, seg, intercept=None, linear=None):
        """A segment's (token nll [S], mean loss, new cache, new state) with `params`."""
        model = self.model
        weights = seg["weights"].astype(jnp.float32)[None]
        with nn.intercept_methods(intercept) if intercept else contextlib.nullcontext():
            h, mutated = model.apply({"params": params, "cache": cache}, seg["inputs"][None],
                                     decode=True, method=TransformerLM.hidden, mutable=["cache"])
        if linear is None:
            batched = None if state is None else jax.tree.map(lambda x: x[None], state)
            nll, new_state = model.apply({"params": params}, h, seg["targets"][None], weights, None, batched,
                                         method=lambda m, *a: m.head.token_nll(*a))
            new_state = None if new_state is None else jax.tree.map(lambda x: x[0], new_state)
        else:  # the plain head, its kernels through `linear`; the segment's logits formed whole
            nll = model.apply({"params": params}, h, seg["targets"][None], linear,
                              method=lambda m, *a: _plain_head_nll(m.head.head_params(), *a, m.config.fwl))
            new_state = state
        nll = nll[0].astype(jnp.float32) * weights[0]
        return nll, jnp.sum(nll) / jnp.maximum(jnp.sum(weights), 1.0), mutated["cache"], new_state

    def _lane_rms(self, theta, state, segments, theta0, rest):
        s = self.settings

        def step(carry, seg):
            theta, state, cache = carry
            # A padding segment (no weights) changes nothing: its step size is zero.
            active = jnp.any(seg["weights"] > 0).astype(jnp.float32)

            def loss(theta):
                nll, mean, cache_out, state_out = self._segment_nll(merge_params(theta, rest, s.params),
                                                                    cache, state, seg)
                return mean, (nll, cache_out, state_out)
            (_, (nll, cache, state)), grad = jax.value_and_grad(loss, has_aux=True)(theta)
            theta = rms_step(theta, grad, theta0, *self.rms, lr=s.lr * active, decay=s.decay * active, eps=s.eps)
            return (theta, state, cache), nll

        (theta, state, _), nll = jax.lax.scan(step, (theta, state, init_cache(self.model, 1)), segments)
        return nll, theta, state

    def _lane_sgd(self, theta, state, segments, rest):
        """SGD, with the kernels' steps kept as low-rank factors within a group of segments.

        A segment's gradient for a kernel W (x @ W in the model) is X^T G: X the segment's
        inputs to that matmul [S, in], G the gradient of its outputs [S, out]. Within a group of
        `merge_every` segments the kernels stay as they were at the group's start (cast once to
        the compute dtype) and each later segment adds sum_j (x X_j^T)(-lr G_j) to the matmul's
        output; after the group the factors are merged into the float32 kernels in one matmul
        X^T G each. Same function as stepping the kernels after every segment, without a
        kernel-sized gradient, update and cast per segment and lane. Other parameters (vectors,
        the embedding table) step after every segment; the table by a scatter into the rows of
        the segment's tokens (its dense gradient is zero elsewhere)."""
        s, model = self.settings, self.model
        dtype = model.config.compute_dtype
        acc = jnp.promote_types(dtype, jnp.float32)
        flat = traverse_util.flatten_dict(theta)
        kernels = {p: flat.pop(p) for p in self._kernel_paths(flat)}
        table_path = _EMBEDDING.get(s.params)
        table = None if table_path is None else flat.pop(table_path)
        group = s.group(segments["inputs"].shape[0] * s.segment_len)
        if segments["inputs"].shape[0] % group:
            raise ValueError(f"merge_every {group} must divide the {segments['inputs'].shape[0]} segments "
                             "of a window (seq_len / segment_len)")
        groups = jax.tree.map(lambda x: x.reshape((-1, group) + x.shape[1:]), segments)
        part_path = (lambda path: path) if s.params == "all" else (
            lambda path: path[1:] if path[0] == s.params else None)

        def segment_loss(others, delta, taps, table, copies, history, state, cache, seg):
            inputs = {}

            def low_rank(path, x, y):  # y = x @ W_copy -> y + the group's earlier steps + the tap
                n = seg["inputs"].shape[0]
                x2, y2 = x.astype(dtype).reshape(n, -1), y.reshape(n, -1)
                if path in inputs:
                    raise NotImplementedError(f"the kernel {'/'.join(path)} is used twice in a segment: its "
                                              "low-rank step needs one input per kernel")
                inputs[path] = x2
                if path in history:
                    xs, gs = history[path]
                    scores = jnp.einsum("ni,ri->nr", x2, xs, preferred_element_type=acc).astype(dtype)
                    y2 = y2.astype(acc) - s.lr * jnp.einsum("nr,ro->no", scores, gs, preferred_element_type=acc)
                if taps is None:  # finding the taps' shapes
                    taps_found[path] = jax.ShapeDtypeStruct(y2.shape, y.dtype)
                    return y
                return (y2.astype(y.dtype) + taps[path]).reshape(y.shape)

            def intercept(next_fun, args, kwargs, context):
                out = next_fun(*args, **kwargs)
                if context.method_name != "__call__":
                    return out
                if isinstance(context.module, nn.Embed) and table is not None:
                    return out + delta.astype(out.dtype)
                if isinstance(context.module, Dense):
                    path = part_path(context.module.path + ("kernel",))
                    if path in copies:
                        return low_rank(path, args[0], out)
                return out

            def linear(name, x, w):
                y = jnp.einsum("...i,ij->...j", x, w.astype(x.dtype), preferred_element_type=acc)
                path = part_path(("head", name))
                return low_rank(path, x, y) if path in copies else y

            merged = {**others, **copies}
            if table is not None:
                merged[table_path] = table
            params = merge_params(traverse_util.unflatten_dict(merged), rest, s.params)
            head_linear = linear if self._head_kernels else None
            nll, mean, cache, state = self._segment_nll(params, cache, state, seg, intercept, head_linear)
            return mean, (nll, cache, state, inputs)

        def segment_step(carry, seg, copies, history):
            others, table, state, cache = carry
            # A padding segment (no weights) changes nothing: its step size is zero.
            active = jnp.any(seg["weights"] > 0).astype(jnp.float32)
            lr = s.lr * active
            delta = jnp.zeros((1, s.segment_len, model.config.d_model), dtype)
            taps = jax.tree.map(lambda t: jnp.zeros(t.shape, t.dtype), taps_found)
            (_, (nll, cache, state, inputs)), (grad, d_delta, d_taps) = jax.value_and_grad(
                segment_loss, argnums=(0, 1, 2), has_aux=True)(others, delta, taps, table, copies, history,
                                                                state, cache, seg)
            others = sgd_update(others, grad, lr=lr)
            if table is not None:
                table = table.at[seg["inputs"]].add(-lr * d_delta[0].astype(table.dtype))
            # The factors hold G (zero for a padding segment); lr is applied in float32 where
            # they are used: lr * G can underflow in float16.
            steps = {p: (inputs[p], (active.astype(d_taps[p].dtype) * d_taps[p]).astype(dtype)) for p in taps}
            return (others, table, state, cache), nll, steps

        def group_step(carry, segs):
            others, table, kernels, state, cache = carry
            copies = {p: k.astype(dtype) for p, k in kernels.items()}
            history, nlls, inner = {}, [], (others, table, state, cache)
            for i in range(group):
                inner, nll, steps = segment_step(inner, jax.tree.map(lambda x: x[i], segs), copies, history)
                history = {p: steps[p] if p not in history else
                           tuple(jnp.concatenate([a, b]) for a, b in zip(history[p], steps[p])) for p in steps}
                nlls.append(nll)
            kernels = {p: k - s.lr * jnp.einsum("ri,ro->io", *history[p], preferred_element_type=acc).reshape(k.shape)
                       .astype(k.dtype) for p, k in kernels.items()}
            others, table, state, cache = inner
            return (others, table, kernels, state, cache), jnp.stack(nlls)

        cache = init_cache(model, 1)
        taps_found = {}  # the shapes of the matmuls' outputs, from one abstract pass
        abstract = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)  # noqa: E731
        jax.eval_shape(lambda *a: segment_loss(*a)[0], abstract(flat),
                       jax.ShapeDtypeStruct((1, s.segment_len, model.config.d_model), dtype), None,
                       abstract(table), {p: jax.ShapeDtypeStruct(k.shape, dtype) for p, k in kernels.items()},
                       {}, abstract(state), abstract(cache), abstract(jax.tree.map(lambda x: x[0, 0], groups)))
        if set(kernels) - set(taps_found):
            raise NotImplementedError(f"kernels {sorted(set(kernels) - set(taps_found))} are not reached by the "
                                      "low-rank steps (only the body's `Dense` and the plain head's W1, W2, unembed are)")
        (others, table, kernels, state, _), nll = jax.lax.scan(group_step, (flat, table, kernels, state, cache),
                                                               groups)
        merged = {**others, **kernels}
        if table is not None:
            merged[table_path] = table
        return nll.reshape(-1, s.segment_len), traverse_util.unflatten_dict(merged), state

    @property
    def _head_kernels(self) -> bool:
        """Whether the head's kernels adapt as low-rank steps (the plain head's, when selected)."""
        return not self.model.config.fwl_enabled and self.settings.params in ("all", "head")

    def _kernel_paths(self, flat: dict) -> tuple:
        """The adapted kernels stepped as low-rank factors: the body's matmul kernels and the
        plain head's (paths within the adapted parameters)."""
        part = self.settings.params
        full = (lambda path: path) if part == "all" else (lambda path: (part,) + path)
        heads = {("head", n) for n in ("W1", "W2", "unembed")} if self._head_kernels else set()
        return tuple(p for p in flat if (full(p)[0] == "body" and p[-1] == "kernel") or full(p) in heads)

def _plain_head_nll(head_params, h, targets, linear, cfg):
    """The plain head's per-position cross-entropy [B, T] with its kernels through `linear`."""
    u = fwl_ops.slow_features(head_params, h, cfg, linear=linear)
    logits = linear("unembed", u, head_params["unembed"]) + head_params["unembed_bias"].astype(jnp.float32)
    return (jax.nn.logsumexp(logits, axis=-1)
            - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0])


# Where the body's embedding table lies in the adapted parameters, by `params`.
_EMBEDDING = {"all": ("body", "embed", "embedding"), "body": ("embed", "embedding")}

