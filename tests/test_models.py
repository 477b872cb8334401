"""The presets build the article's architectures; VAE and CVAE take (or refuse) a condition."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvae_jax.apps import inference
from cvae_jax.config import ConfigError, apply_overrides, get_config
from cvae_jax.core.models import build_model
from cvae_jax.training.step import init_state


def count(params):
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def dense(n_in, n_out):
    return n_in * n_out + n_out


def test_article_vae_has_the_articles_layers():
    model = build_model(get_config("vae", "article").model, (28, 28, 1))
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))  # shapes only
    # 784 -> 256 -> (mean 2, log_var 2); 2 -> 256 -> 784
    expected = dense(784, 256) + 2 * dense(256, 2) + dense(2, 256) + dense(256, 784)
    assert count(params) == expected


@pytest.mark.slow
def test_article_cvae_has_the_articles_layers():
    model = build_model(get_config("cvae", "article").model, (28, 28, 1))
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros((1, 10)))
    conv = 3 * 3 * 1 * 32 + 32  # Conv2D(32, 3x3, same), stride 1: 28x28x32 features
    encoder = conv + dense(28 * 28 * 32, 64) + 2 * dense(64 + 10, 2)
    decoder = dense(2 + 10, 64) + dense(64, 784)
    assert count(params) == encoder + decoder
    # The run initializes under jit: on CPU bit for bit flax's eager init (checkpoints and results
    # unchanged); on a GPU (H200) fused kernels round the truncated-normal draw differently, so there
    # the same values to float32 rounding.
    state = init_state(
        model, optax.adam(1e-3), {"image": jnp.zeros((1, 28, 28, 1))}, jnp.zeros((1, 10)), jax.random.key(0)
    )
    assert jax.tree.structure(state.params) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
        if jax.default_backend() == "cpu":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["vae", "cvae"])
@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model.encoder_conv=16,32", "model.decoder_conv=32,16"],
        ["model.likelihood=gaussian", "model.learn_scale=true"],
    ],
)
def test_encode_decode_shapes(kind, overrides):
    cfg = apply_overrides(get_config(kind), overrides + ["model.latent_dim=5"])
    model = build_model(cfg.model, (28, 28, 1))
    x = jnp.zeros((3, 28, 28, 1))
    c = jnp.eye(10)[:3] if kind == "cvae" else None

    def encode_decode(x, c):
        params = model.init(jax.random.key(0), x, c)
        mean, log_var = model.apply(params, x, c, method=model.encode)
        return mean, log_var, model.apply(params, mean, c, method=model.decode)

    mean, log_var, out = jax.eval_shape(encode_decode, x, c)  # shapes: traced, not compiled
    assert mean.shape == log_var.shape == (3, 5)
    for value in out.values():
        assert value.shape == (3, 28, 28, 1)


def test_learned_scale_is_a_parameter_and_fixed_scale_is_not():
    fixed = apply_overrides(get_config("vae"), ["model.likelihood=gaussian"])
    learned = apply_overrides(fixed, ["model.learn_scale=true"])
    x = jnp.zeros((1, 28, 28, 1))
    p_fixed = jax.eval_shape(build_model(fixed.model, (28, 28, 1)).init, jax.random.key(0), x)
    p_learned = jax.eval_shape(build_model(learned.model, (28, 28, 1)).init, jax.random.key(0), x)
    assert count(p_learned) - count(p_fixed) == 28 * 28


def test_vae_refuses_condition_and_cvae_requires_it():
    x = jnp.zeros((2, 28, 28, 1))
    vae = build_model(get_config("vae").model, (28, 28, 1))
    with pytest.raises(ValueError, match="takes no condition"):
        vae.init(jax.random.key(0), x, jnp.zeros((2, 10)))
    cvae = build_model(get_config("cvae").model, (28, 28, 1))
    with pytest.raises(ValueError, match="needs a condition"):
        cvae.init(jax.random.key(0), x)


def test_decoder_conv_needs_divisible_image():
    cfg = apply_overrides(get_config("vae"), ["model.decoder_conv=8,8,8"])
    with pytest.raises(ConfigError, match="must divide by 8"):
        build_model(cfg.model, (28, 28, 1))


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_and_loss_and_stays_close():
    from cvae_jax.core import objectives

    images = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1))
    batch = {"image": images, "label": jnp.arange(16) % 10}
    losses = {}
    for dtype in ("float32", "bfloat16"):
        cfg = apply_overrides(
            get_config("cvae"), [f"model.compute_dtype={dtype}", "model.encoder_conv=8", "model.decoder_conv=8"]
        )
        model = build_model(cfg.model, (28, 28, 1), 10)
        params = jax.jit(model.init)(jax.random.key(0), images, jax.nn.one_hot(batch["label"], 10))
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))  # master weights stay float32
        _, loss = objectives.make_objective(model, cfg.train, num_classes=10, binarize=False, total_steps=1)
        value, metrics = jax.jit(loss)(params, batch, jax.random.key(2))
        assert value.dtype == jnp.float32 and metrics["kl"].dtype == jnp.float32
        mean, _ = jax.eval_shape(
            lambda p: model.apply(p, images, jax.nn.one_hot(batch["label"], 10), method=model.encode), params
        )
        assert mean.dtype == jnp.float32
        losses[dtype] = float(value)
    # Same parameters (same init key), bfloat16 matmuls: the loss agrees to bfloat16 precision.
    assert abs(losses["bfloat16"] - losses["float32"]) < 0.02 * losses["float32"]


def _layer_cases():
    import flax.linen as nn

    from cvae_jax.nn import tuned as layers

    # (ours, flax's, input shape). ConvTranspose: strides 2 and 3 (the tap-output forward on CPU).
    # Conv: the fifth and sixth take conv_output_taps (stride 1, k*k*features <= c_in), the others the
    # patch kernel gradient (k*k*c_in <= features; on CPU always, with the tap-matmul input gradient;
    # strides 1, 2, 3, odd sizes). Dense layers are flax's in both backends.
    return [
        *[
            (layers.ConvTranspose(f, 3, 2), nn.ConvTranspose(f, (3, 3), strides=(2, 2), padding="SAME"), shape)
            for shape, f in [((3, 7, 7, 5), 4), ((2, 14, 14, 3), 6), ((2, 5, 6, 2), 3)]
        ],
        (layers.ConvTranspose(4, 3, 3), nn.ConvTranspose(4, (3, 3), strides=(3, 3), padding="SAME"), (2, 4, 5, 3)),
        *[
            (layers.Conv(f, 3, s), nn.Conv(f, (3, 3), strides=s, padding="SAME"), shape)
            for shape, f, s in [
                ((3, 28, 28, 1), 16, 1),
                ((2, 7, 6, 1), 12, 2),
                ((2, 9, 9, 2), 18, 1),
                ((2, 14, 14, 3), 6, 2),
                ((3, 28, 28, 32), 1, 1),
                ((2, 7, 8, 20), 2, 1),
                ((2, 9, 7, 4), 5, 2),
                ((2, 8, 10, 3), 4, 3),
                ((2, 6, 6, 3), 4, 1),
            ]
        ],
    ]


@pytest.mark.parametrize("case", range(13))
def test_layers_match_flax_in_params_values_and_gradients(case):
    """The tuned Conv and ConvTranspose (hand-written kernel gradients) against flax's."""
    ours, theirs, shape = _layer_cases()[case]
    x = np.random.default_rng(0).standard_normal(shape, np.float32)
    params, reference = jax.jit(lambda x: (ours.init(jax.random.key(1), x), theirs.init(jax.random.key(1), x)))(x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, reference)
    np.testing.assert_array_equal(params["params"]["kernel"], reference["params"]["kernel"])  # same init

    def both(params, x):
        moved = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)
        weights = jax.random.normal(jax.random.key(3), jax.eval_shape(ours.apply, moved, x).shape)

        def loss(module):
            return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)) * weights)

        return (
            ours.apply(moved, x),
            theirs.apply(moved, x),
            jax.grad(loss(ours), argnums=(0, 1))(moved, x),
            jax.grad(loss(theirs), argnums=(0, 1))(moved, x),
        )

    # One program, its machine code unoptimized (LLVM -O0): the check is the math of the forward and
    # gradients, which the codegen level does not change; op by op, or optimized, a case took 8-12 s
    # on 2 cores, nearly all of it compiling.
    program = jax.jit(both).lower(params, x).compile(compiler_options={"xla_backend_optimization_level": 0})
    out_ours, out_theirs, g_ours, g_theirs = program(params, x)
    np.testing.assert_allclose(out_ours, out_theirs, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_theirs)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_layers_take_the_custom_gradient_where_documented():
    """The cases above that should run a hand-written gradient really do (a custom_vjp in the
    jaxpr), the output-taps convolutions run no convolution primitive, and the others run XLA's:
    so the flax comparison covers every path of each layer."""
    for ours, _, shape in _layer_cases():
        x = jnp.ones(shape)
        params = jax.eval_shape(ours.init, jax.random.key(0), x)
        text = str(jax.make_jaxpr(lambda p: ours.apply(p, x))(params))
        kind = type(ours).__name__
        output_taps = kind == "Conv" and ours.stride == 1 and 9 * ours.features <= shape[-1]
        # The tuned backend takes its own paths on every device (model.kernels=auto picks it on CPU only).
        expected = {
            "ConvTranspose": True,
            "Conv": True,
        }[kind]
        assert ("custom_vjp" in text) == expected, (kind, shape)  # output taps: the tap matmul's kernel grad
        if kind == "Conv":
            assert ("conv_general_dilated" not in text) == output_taps, shape
        if kind == "ConvTranspose":  # the forward is the tap-output matmul, no convolution
            assert "conv_general_dilated" not in text, shape


def test_inference_compiles_per_model_and_runs_an_unhashable_model_op_by_op():
    cfg = apply_overrides(
        get_config("cvae"), ["model.latent_dim=3", "model.encoder_hidden=16", "model.decoder_hidden=16"]
    )
    model = build_model(cfg.model, (28, 28, 1))
    x, c = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1)), jnp.eye(10)[:4]
    params = model.init(jax.random.key(0), x, c)
    by_hand = model.apply(params, x, c, method=model.encode)  # flax, op by op
    assert np.allclose(inference.encode(model, params, x, c)[0], by_hand[0], atol=1e-6)
    compiled = inference.encode.jitted._cache_size()
    assert compiled >= 1
    # A model with a list field cannot be a compile-time constant: the same function runs it op by op.
    unhashable = model.clone(encoder=model.encoder.clone(hidden=[16]))
    with pytest.raises(TypeError):
        hash(unhashable)
    assert np.allclose(inference.encode(unhashable, params, x, c)[0], by_hand[0], atol=1e-6)
    assert inference.encode.jitted._cache_size() == compiled  # not through the compiled path
    key = jax.random.key(2)
    np.testing.assert_allclose(
        inference.sample(unhashable, params, key, 4, c), inference.sample(model, params, key, 4, c), atol=1e-6
    )
    # Keyword arguments still reach the function (num by name stays a compile-time constant).
    np.testing.assert_array_equal(
        inference.sample(model, params, key, num=4, condition=c), inference.sample(model, params, key, 4, c)
    )


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("article-cvae", []),
        (
            "conv-vae",
            [
                "model.encoder_conv=8,16",
                "model.encoder_hidden=32",
                "model.decoder_hidden=32",
                "model.decoder_conv=16,8",
            ],
        ),
    ],
)
@pytest.mark.slow
def test_tuned_kernels_match_flax_kernels_in_the_whole_model(name, overrides):
    """model.kernels=tuned and =flax build the same parameters and the same loss, with gradients
    equal to float rounding; auto takes tuned on the CPU backend."""
    from cvae_jax.nn import layers
    from cvae_jax.tasks.images import build, init_for

    kind, preset = ("cvae", "article") if name == "article-cvae" else ("vae", "default")
    images = jax.random.uniform(jax.random.key(0), (70, 28, 28, 1))
    batch = {"image": images, "label": jnp.arange(70) % 10}
    results = {}
    for kernels in ("flax", "tuned"):
        cfg = apply_overrides(get_config(kind, preset), [*overrides, f"model.kernels={kernels}"])
        parts = build(cfg, (28, 28, 1), 10)
        params = init_for(parts, cfg, (28, 28, 1), 10).params
        loss = jax.jit(lambda p: parts.loss(p, batch, jax.random.key(1), 0)[0])
        results[kernels] = (params, loss(params), jax.jit(jax.grad(loss))(params))
    (p_flax, l_flax, g_flax), (p_tuned, l_tuned, g_tuned) = results["flax"], results["tuned"]
    assert jax.tree.structure(p_flax) == jax.tree.structure(p_tuned)
    for a, b in zip(jax.tree.leaves(p_flax), jax.tree.leaves(p_tuned)):
        np.testing.assert_array_equal(a, b)  # same initial values: checkpoints are interchangeable
    np.testing.assert_allclose(l_tuned, l_flax, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_flax), jax.tree.leaves(g_tuned)):
        np.testing.assert_allclose(b, a, rtol=2e-3, atol=2e-4 * float(jnp.max(jnp.abs(a))))
    assert layers.resolve("auto") == ("tuned" if jax.default_backend() == "cpu" else "flax")
    with pytest.raises(ValueError, match="model.kernels"):
        layers.resolve("fast")
