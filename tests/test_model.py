"""TransformerLM: decoding, packed segments, the shared head tree, scan/remat, sharding, FLOPs."""

import contextlib
import dataclasses
import io

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

from fwl_jax.models import (LOGICAL_RULES, ModelConfig, TransformerLM, decode_step, flops_per_token, generate,
                            logical_shardings, make_mesh, param_count, prefill, stack_layers, unstack_layers)
from fwl_jax.models.transformer import Mlp
from fwl_jax.ops import fwl as fwl_ops

FWL = fwl_ops.FWLConfig(size=16, vocab_size=61, inner_loss_scale=1 / 32, hidden_mult=2, step_size_init=0.5)
CFG = ModelConfig(vocab_size=61, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64, max_len=32,
                  dtype="float32", fwl=FWL)


def _init(cfg, tokens, seed=0):
    return nn.unbox(TransformerLM(cfg).init(jax.random.key(seed), tokens))


def _tokens(shape=(2, 12), seed=1):
    return jax.random.randint(jax.random.key(seed), shape, 0, CFG.vocab_size)


def _close(a, b, tol=2e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("scan", [False, True])
def test_teacher_forced_decoding_equals_one_apply(enabled, scan):
    cfg = dataclasses.replace(CFG, fwl_enabled=enabled, scan_layers=scan)
    model, tokens = TransformerLM(cfg), _tokens()
    variables = _init(cfg, tokens)
    whole, _ = model.apply(variables, tokens)
    logits, state = prefill(model, variables, tokens[:, :3])
    _close(logits, whole[:, 2])
    step = jax.jit(lambda s, t: decode_step(model, variables, s, t))
    for t in range(3, tokens.shape[1]):
        logits, state = step(state, tokens[:, t])
        _close(logits, whole[:, t])


@pytest.mark.parametrize("enabled", [True, False])
def test_packed_documents_equal_documents_alone(enabled):
    cfg = dataclasses.replace(CFG, fwl_enabled=enabled)
    model = TransformerLM(cfg)
    doc_a, doc_b = _tokens((1, 5), seed=2), _tokens((1, 9), seed=3)
    packed = jnp.concatenate([doc_a, doc_b], axis=1)
    segment_ids = jnp.asarray([[1] * 5 + [2] * 9])
    variables = _init(cfg, packed)
    logits, _ = model.apply(variables, packed, segment_ids=segment_ids)
    alone_a, _ = model.apply(variables, doc_a)
    alone_b, _ = model.apply(variables, doc_b)
    _close(logits[:, :5], alone_a)
    _close(logits[:, 5:], alone_b)


def test_fast_weights_off_is_the_slow_head_and_on_changes_only_later_positions():
    tokens = _tokens()
    segment_ids = jnp.asarray([[1] * 4 + [2] * 8, [3] * 12])
    variables = _init(CFG, tokens)
    off = TransformerLM(dataclasses.replace(CFG, fwl_enabled=False))
    slow, state = off.apply(variables, tokens, segment_ids=segment_ids)
    assert state is None
    h = off.apply(variables, tokens, segment_ids=segment_ids, method=TransformerLM.hidden)
    _close(slow, fwl_ops.slow_logits(variables["params"]["head"], h, CFG.fwl), tol=1e-6)
    fast, _ = TransformerLM(CFG).apply(variables, tokens, segment_ids=segment_ids)
    first = np.asarray([[True] + [False] * 3 + [True] + [False] * 7, [True] + [False] * 11])
    diff = np.abs(np.asarray(fast - slow)).max(axis=-1)
    assert diff[first].max() < 1e-5
    assert diff[~first].min() > 1e-4


def _loss_fn(model, tokens):
    def loss(params):
        logits, _ = model.apply({"params": params}, tokens)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp[:, :-1], tokens[:, 1:, None], axis=-1))
    return loss


def _nll_loss_fn(model, tokens):
    """The same loss through the training path (token_nll: no [B, T, V] logits)."""
    def loss(params):
        nll, _ = model.apply({"params": params}, tokens, method=TransformerLM.token_nll)
        return jnp.mean(nll[:, :-1])
    return loss


@pytest.mark.parametrize("enabled", [False, True])
def test_token_nll_equals_the_loss_of_the_logits(enabled):
    cfg = dataclasses.replace(CFG, fwl_enabled=enabled, fwl=dataclasses.replace(CFG.fwl, unembed_chunk=5))
    tokens = _tokens()
    model = TransformerLM(cfg)
    params = _init(cfg, tokens)["params"]
    want, want_grads = jax.value_and_grad(_loss_fn(model, tokens))(params)
    got, grads = jax.value_and_grad(_nll_loss_fn(model, tokens))(params)
    _close(got, want, 1e-6)
    jax.tree.map(lambda a, b: _close(a, b, 1e-5), grads, want_grads)


@pytest.mark.parametrize("remat", ["none", "full", "dots_saveable"])
def test_scan_and_remat_do_not_change_outputs_or_gradients(remat):
    tokens = _tokens()
    params = _init(CFG, tokens)["params"]
    want_loss, want_grads = jax.value_and_grad(_loss_fn(TransformerLM(CFG), tokens))(params)
    unrolled = TransformerLM(dataclasses.replace(CFG, remat=remat))
    loss, grads = jax.jit(jax.value_and_grad(_loss_fn(unrolled, tokens)))(params)
    _close(loss, want_loss, 1e-6)
    jax.tree.map(lambda a, b: _close(a, b, 1e-5), grads, want_grads)
    scanned = TransformerLM(dataclasses.replace(CFG, remat=remat, scan_layers=True))
    loss, grads = jax.jit(jax.value_and_grad(_loss_fn(scanned, tokens)))(stack_layers(params, CFG.num_layers))
    _close(loss, want_loss, 1e-6)
    jax.tree.map(lambda a, b: _close(a, b, 1e-5), unstack_layers(grads, CFG.num_layers), want_grads)


def test_scanned_init_has_the_stacked_layout():
    tokens = _tokens()
    scanned = _init(dataclasses.replace(CFG, scan_layers=True), tokens)["params"]
    unrolled = _init(CFG, tokens)["params"]
    assert jax.tree.map(jnp.shape, stack_layers(unrolled, CFG.num_layers)) == jax.tree.map(jnp.shape, scanned)


def test_sharded_on_a_2x2x2_mesh_equals_one_device():
    cfg = dataclasses.replace(CFG, vocab_size=64, fwl=dataclasses.replace(FWL, vocab_size=64))  # divisible axes
    model, tokens = TransformerLM(cfg), _tokens((4, 12))
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens))
    mesh = make_mesh(2, 2, 2)
    shardings = logical_shardings(abstract, mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
        variables = jax.jit(lambda: nn.unbox(model.init(jax.random.key(0), tokens)), out_shardings=shardings)()
        batch_sharding = jax.NamedSharding(mesh, jax.P(("data", "fsdp"), None))
        sharded_tokens = jax.device_put(tokens, batch_sharding)
        loss, grads = jax.jit(jax.value_and_grad(_loss_fn(model, sharded_tokens)))(variables["params"])
    w1 = variables["params"]["head"]["W1"]
    assert w1.sharding.spec == jax.P("fsdp", "tensor")
    assert len(w1.addressable_shards) == 8
    single = jax.device_put(_init(cfg, tokens), jax.devices()[0])
    want_loss, want_grads = jax.value_and_grad(_loss_fn(model, tokens))(single["params"])
    _close(loss, want_loss, 1e-6)
    jax.tree.map(lambda a, b: _close(a, b, 1e-5), grads, want_grads)


def _compiled_flops(fn, *args):
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return analysis["flops"]


@pytest.mark.parametrize("enabled,meta", [(False, "full"), (True, "full"), (True, "first_order")])
def test_flops_per_token_agrees_with_xla_cost_analysis(enabled, meta):
    fc = dataclasses.replace(fwl_ops.FWLConfig(size=64, vocab_size=128, inner_loss_scale=1 / 64), meta_gradient=meta)
    cfg = ModelConfig(vocab_size=128, d_model=64, num_layers=2, num_heads=4, mlp_dim=256, max_len=64,
                      dtype="float32", fwl=fc, fwl_enabled=enabled)
    tokens = jax.random.randint(jax.random.key(0), (2, 64), 0, 128)
    model = TransformerLM(cfg)
    params = _init(cfg, tokens)["params"]
    n_tokens = tokens.size
    forward = _compiled_flops(lambda p: model.apply({"params": p}, tokens)[0], params)
    training = _compiled_flops(jax.grad(_nll_loss_fn(model, tokens)), params)
    assert forward / n_tokens == pytest.approx(flops_per_token(cfg, 64, training=False, batch_size=2), rel=0.1)
    assert training / n_tokens == pytest.approx(flops_per_token(cfg, 64, training=True, batch_size=2), rel=0.1)


def _jaxpr_matmul_flops(jaxpr):
    """2 x multiply-adds of every dot_general in `jaxpr` and its sub-jaxprs (custom VJPs'
    backward passes included), before XLA simplifies anything."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[i] for i in contracting])
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _jaxpr_matmul_flops(inner)
    return total


@pytest.mark.parametrize("enabled,meta,method", [(False, "full", "auto"), (True, "full", "auto"),
                                                 (True, "first_order", "auto"), (True, "full", "chunked"),
                                                 (True, "first_order", "chunked")])
def test_head_only_flops_are_the_matmuls_of_the_head_alone(enabled, meta, method):
    """`head_only`: the head's value and gradient (parameters and input) for fixed body
    outputs, as `bench/step.py` times it, against the matmuls of that function's program
    (counted in its jaxpr: XLA's CPU count would not do, since on the CPU XLA merges the slow
    logits the backward recomputes with the forward's, which the GPU keeps apart). Within 2%:
    leaving out the recomputation (2 s V a token) would be 4% off here, and counting the
    chunk summaries' backward with `first_order` (whose keys and values are constants) 7%."""
    fc = dataclasses.replace(fwl_ops.FWLConfig(size=64, vocab_size=512, inner_loss_scale=1 / 64), meta_gradient=meta,
                             attention_method=method, chunk_size=16 if method == "chunked" else 0)
    cfg = ModelConfig(vocab_size=512, d_model=64, num_layers=2, num_heads=4, mlp_dim=256, max_len=64,
                      dtype="float32", fwl=fc, fwl_enabled=enabled)
    params = fwl_ops.init_params(jax.random.key(0), 64, fc)
    h = jax.random.normal(jax.random.key(1), (2, 64, 64))
    targets = jax.random.randint(jax.random.key(2), (2, 64), 0, 512)
    weights = jnp.ones((2, 64))

    def loss(params, h):
        if enabled:
            return fwl_ops.fwl_token_nll(params, h, targets, weights, fc)[0].mean()
        return fwl_ops.slow_token_nll(params, h, targets, fc).mean()
    jaxpr = jax.make_jaxpr(jax.value_and_grad(loss, argnums=(0, 1)))(params, h).jaxpr
    counted = _jaxpr_matmul_flops(jaxpr) / targets.size
    assert counted == pytest.approx(flops_per_token(cfg, 64, training=True, batch_size=2, head_only=True), rel=0.02)


def test_param_count():
    tokens = _tokens()
    params = _init(CFG, tokens)["params"]
    assert param_count(CFG) == sum(x.size for x in jax.tree.leaves(params))
    d, f, v, s, m = 32, 64, 61, 16, 32
    attention = d * d * 2 + 2 * d * (d // 2)  # query and out, key and value with 2 of 4 heads
    layer = attention + 3 * d * f + 2 * d  # SwiGLU MLP and two RMSNorm scales
    head = d * m + m + m * s + 3 * s + s * v + v + 6
    assert param_count(CFG) == v * d + 2 * layer + d + head


def test_generate_samples_and_validates():
    model, tokens = TransformerLM(CFG), _tokens((2, 4))
    variables = _init(CFG, tokens)
    out = generate(model, variables, tokens, max_new_tokens=6, rng=jax.random.key(0), top_k=5, top_p=0.9)
    assert out.shape == (2, 6) and out.dtype == jnp.int32
    plain = TransformerLM(dataclasses.replace(CFG, fwl_enabled=False))
    assert generate(plain, variables, tokens, max_new_tokens=2, rng=jax.random.key(0)).shape == (2, 2)
    greedy = generate(model, variables, tokens, max_new_tokens=3, rng=jax.random.key(1), temperature=0)
    logits, _ = prefill(model, variables, tokens)
    np.testing.assert_array_equal(greedy[:, 0], jnp.argmax(logits, -1))
    eos = int(greedy[0, 0])
    stopped = generate(model, variables, tokens, max_new_tokens=3, rng=jax.random.key(1), temperature=0, eos_id=eos)
    np.testing.assert_array_equal(stopped[0], [eos] * 3)
    for kwargs, match in [(dict(prompt_tokens=tokens[:, :0]), "P >= 1"),
                          (dict(max_new_tokens=40), "exceeds the cache"),
                          (dict(temperature=-1.0), "temperature"),
                          (dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p")]:
        args = {**dict(prompt_tokens=tokens, max_new_tokens=3, rng=jax.random.key(0)), **kwargs}
        with pytest.raises(ValueError, match=match):
            generate(model, variables, args.pop("prompt_tokens"), **args)


@pytest.mark.parametrize("field,value,match", [
    ("d_model", 30, "divisible by num_heads"), ("num_kv_heads", 3, "multiple of num_kv_heads"),
    ("mlp_type", "relu", "mlp_type"), ("remat", "some", "remat"), ("attention_impl", "flash", "attention_impl"),
    ("fwl", dataclasses.replace(FWL, vocab_size=7), "fwl.vocab_size"),
])
def test_bad_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(CFG, **{field: value})


def test_dropout_needs_a_key_and_changes_training_outputs():
    cfg = dataclasses.replace(CFG, dropout_rate=0.2)
    model, tokens = TransformerLM(cfg), _tokens()
    variables = _init(cfg, tokens)
    eval_logits, _ = model.apply(variables, tokens)
    train_logits, _ = model.apply(variables, tokens, deterministic=False, rngs={"dropout": jax.random.key(5)})
    assert float(jnp.abs(train_logits - eval_logits).max()) > 1e-3
    _close(eval_logits, TransformerLM(CFG).apply(variables, tokens)[0])


def test_bad_tokens():
    model, tokens = TransformerLM(CFG), _tokens()
    variables = _init(CFG, tokens)
    with pytest.raises(ValueError, match="longer|max_len"):
        model.apply(variables, _tokens((1, 40)))
    with pytest.raises(ValueError, match="segment_ids must have the shape"):
        model.apply(variables, tokens, segment_ids=jnp.ones((2, 5), jnp.int32))


@pytest.mark.parametrize("mlp_type", ["gelu", "swiglu"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_mlp_recomputes_its_activation_and_keeps_only_the_matmul_outputs(mlp_type, dtype):
    """The block's MLP equals the plain expression (values and gradients), and what its
    backward keeps of [B, T, mlp_dim] size is the matmuls' outputs and the activation's
    output only: gelu's tanh and silu's sigmoid are recomputed."""
    cfg = dataclasses.replace(CFG, mlp_type=mlp_type, dtype=dtype)
    assert cfg.mlp_dim != cfg.d_model  # the residuals are told apart by their width
    x = jax.random.normal(jax.random.key(0), (2, 12, cfg.d_model), jnp.float32)
    module = Mlp(cfg)
    params = nn.unbox(module.init(jax.random.key(1), x))["params"]
    act = {"gelu": lambda p, x: nn.gelu(x @ p["up"]["kernel"].astype(x.dtype)),
           "swiglu": lambda p, x: (nn.silu(x @ p["gate"]["kernel"].astype(x.dtype))
                                   * (x @ p["up"]["kernel"].astype(x.dtype)))}

    def plain(p, x):
        x = x.astype(cfg.compute_dtype)
        return act[mlp_type](p, x) @ p["down"]["kernel"].astype(x.dtype)

    def loss(fn):
        return lambda p, x: jnp.sum(jnp.sin(fn(p, x).astype(jnp.float32)))

    got, got_grads = jax.jit(jax.value_and_grad(loss(lambda p, x: module.apply({"params": p}, x)), (0, 1)))(params, x)
    want, want_grads = jax.jit(jax.value_and_grad(loss(plain), (0, 1)))(params, x)
    tol = 1e-6 if dtype == "float32" else 1e-2
    _close(got, want, tol)
    jax.tree.map(lambda a, b: _close(a, b, tol), got_grads, want_grads)

    def wide_residuals(fn):  # what the backward keeps of [B, T, mlp_dim] size, one line each
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            print_saved_residuals(loss(fn), params, x)
        return [line for line in text.getvalue().splitlines() if f"[2,12,{cfg.mlp_dim}]" in line]

    wide = wide_residuals(lambda p, x: module.apply({"params": p}, x))
    assert len(wide) == {"gelu": 2, "swiglu": 3}[mlp_type], wide
    assert not any("tanh" in line or "logistic" in line for line in wide), wide
    assert len(wide_residuals(plain)) > len(wide)  # what autodiff alone keeps


@pytest.mark.parametrize("remat", ["full", "dots_saveable"])
def test_mlp_activation_is_computed_once_more_under_a_block_remat(remat):
    """Under a block remat policy the MLP's activation is not checkpointed a second time:
    its backward computes it twice in all (forward, rematerialised forward), as without the
    activation's own checkpoint."""
    cfg = dataclasses.replace(CFG, mlp_type="gelu", remat=remat, scan_layers=False)  # one tanh a layer each
    tokens = _tokens()
    params = _init(cfg, tokens)["params"]
    lowered = jax.jit(jax.grad(_loss_fn(TransformerLM(cfg), tokens))).lower(params).as_text()
    assert lowered.count("tanh") == 2 * cfg.num_layers  # 3 a layer with the activation's own checkpoint
