"""SDE-GAN: gradients (finite differences, across adjoints), the model interface (vmap, fit,
ensembles, checkpoints, inference mode), clipping, errors, and (slow) learning OU marginals."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from conftest import central_differences
from jax.flatten_util import ravel_pytree

import neurde
from neurde.data import ornstein_uhlenbeck
from neurde.stochastic.sde_gan import (
    CDEDiscriminator,
    SDEGenerator,
    clip_discriminator,
    wasserstein_loss,
)

TS = jnp.linspace(0.0, 1.0, 5)


def _generator(seed=1, dtype=None):
    gen = SDEGenerator(1, 2, 2, 3, t1=1.0, dt0=0.125, width_size=4, key=jr.key(seed))
    if dtype is not None:
        gen = jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, gen)
    return gen


def _discriminator(seed=2, dtype=None):
    disc = CDEDiscriminator(1, 3, width_size=4, steps=4, key=jr.key(seed))
    if dtype is not None:
        disc = jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, disc)
    return disc


def _real(n=3, dtype=jnp.float32):
    return ornstein_uhlenbeck(n, 5, t1=1.0, dtype=dtype, key=jr.key(5)).ys


def test_shapes_and_reproducibility():
    gen, disc = _generator(), _discriminator()
    path = gen(None, TS, key=jr.key(0))
    assert path.shape == (5, 1) and path.dtype == jnp.float32
    np.testing.assert_array_equal(path, gen(None, TS, key=jr.key(0)))
    assert not np.allclose(path, gen(None, TS, key=jr.key(3)))
    assert disc((TS, path)).shape == ()


def test_gradient_matches_finite_differences_float64():
    # The key fixes the initial noise and the Brownian path, so the loss is a smooth function
    # of the parameters. Central differences, eps 1e-6: truncation ~1e-12, rounding ~1e-10.
    with jax.enable_x64(True):
        nets = (_generator(dtype=jnp.float64), _discriminator(dtype=jnp.float64))
        real, ts = _real(2, jnp.float64), TS.astype(jnp.float64)
        params, static = eqx.partition(nets, eqx.is_inexact_array)
        flat, unravel = ravel_pytree(params)

        def loss(x):
            g, d = eqx.combine(unravel(x), static)
            return wasserstein_loss(g, d, ts, real, key=jr.key(7))

        grad = jax.jit(jax.grad(loss))(flat)
        fd = central_differences(jax.jit(loss), flat)
        assert flat.size > 100 and np.abs(grad).max() > 1e-3
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)


def test_reversible_adjoint_gives_backprops_gradient_float64():
    # Reversible Heun's exact adjoint (the paper's choice) rebuilds the states backwards: the
    # same gradient as backprop through the same solve, on the same Brownian path.
    with jax.enable_x64(True):
        gen = _generator(dtype=jnp.float64)
        rev = eqx.tree_at(lambda g: g.model.adjoint, gen, neurde.Reversible())
        ts = TS.astype(jnp.float64)

        def loss(g):
            paths = jax.vmap(lambda k: g(None, ts, key=k))(jr.split(jr.key(3), 4))
            return jnp.sum(jnp.sin(paths))

        grads = [eqx.filter_jit(eqx.filter_grad(loss))(g) for g in (gen, rev)]
        a, b = (ravel_pytree(eqx.filter(g, eqx.is_inexact_array))[0] for g in grads)
        assert np.abs(a).max() > 1e-3
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)


def test_vmap_matches_single_calls():
    gen, disc = _generator(), _discriminator()
    keys = jr.split(jr.key(0), 3)
    paths = jax.vmap(lambda k: gen(None, TS, key=k))(keys)
    scores = jax.vmap(lambda p: disc((TS, p)))(paths)
    for i in range(3):
        np.testing.assert_allclose(paths[i], gen(None, TS, key=keys[i]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scores[i], disc((TS, paths[i])), rtol=1e-5, atol=1e-6)


def test_save_load_round_trip(tmp_path):
    for name, net, fresh, call in (
        ("g", _generator(), _generator(11), lambda m: m(None, TS, key=jr.key(0))),
        ("d", _discriminator(), _discriminator(12), lambda m: m((TS, _real(1)[0]))),
    ):
        neurde.save(tmp_path / f"{name}.eqx", net)
        loaded = neurde.load(tmp_path / f"{name}.eqx", fresh)
        np.testing.assert_array_equal(call(loaded), call(net))
        assert not np.allclose(call(fresh), call(net))


def test_ensemble_vmapped_call():
    ensemble = neurde.make_ensemble(
        lambda k: SDEGenerator(1, 2, 2, 3, t1=1.0, dt0=0.125, width_size=4, key=k), 3, key=jr.key(4)
    )
    keys = jr.split(jr.key(0), 3)
    paths = eqx.filter_vmap(lambda m, k: m(None, TS, key=k))(ensemble, keys)
    assert paths.shape == (3, 5, 1)
    for i in range(3):
        member = neurde.ensemble_member(ensemble, i)
        np.testing.assert_allclose(paths[i], member(None, TS, key=keys[i]), rtol=1e-5, atol=1e-6)


def test_fit_trains_each_network():
    # `fit` on the generator alone: move the mean of the final value to 0.5.
    def gen_loss(gen, batch, key):
        del batch
        ends = jax.vmap(lambda k: gen(None, TS, key=k)[-1, 0])(jr.split(key, 8))
        return (jnp.mean(ends) - 0.5) ** 2

    result = neurde.fit(
        _generator(), gen_loss, jnp.zeros(1), steps=30, key=jr.key(0), progress=False,
        optim=optax.adam(1e-2),
    )  # fmt: skip
    assert result.history.loss[-1] < 0.2 * result.history.loss[0]

    def disc_loss(disc, batch, key):
        del key
        return jnp.mean((jax.vmap(lambda p: disc((TS, p)))(batch) - 1.0) ** 2)

    result = neurde.fit(
        _discriminator(), disc_loss, _real(4), steps=30, key=jr.key(0), progress=False,
        optim=optax.adam(1e-2),
    )  # fmt: skip
    assert result.history.loss[-1] < 0.2 * result.history.loss[0]


def test_inference_mode_drops_the_noise():
    gen = eqx.nn.inference_mode(_generator())
    path = gen(None, TS)
    np.testing.assert_array_equal(path, gen(None, TS, key=jr.key(3)))
    # V = 0 and no Brownian motion: the drift's ODE from zeta(0).
    ode = eqx.nn.inference_mode(_generator().model)
    x = ode(_generator().initial(jnp.zeros(2)), TS)
    np.testing.assert_allclose(path, jax.vmap(_generator().readout)(x), rtol=1e-6)
    assert not np.allclose(path, _generator()(None, TS, key=jr.key(3)))


def test_clipping_bounds_the_weights():
    disc = _discriminator()
    big = jax.tree.map(lambda x: 100 * x if eqx.is_inexact_array(x) else x, disc)
    clipped = clip_discriminator(big)
    linears = lambda m: [  # noqa: E731
        x for x in jax.tree.leaves(m, is_leaf=lambda x: isinstance(x, eqx.nn.Linear))
        if isinstance(x, eqx.nn.Linear)
    ]  # fmt: skip
    assert len(linears(clipped)) == 5  # initial MLP (2), field MLP (2), readout
    for before, after in zip(linears(big), linears(clipped), strict=True):
        bound = 1.0 / after.out_features
        assert np.abs(after.weight).max() <= bound + 1e-7
        assert np.abs(before.weight).max() > bound  # the clip did something
        np.testing.assert_array_equal(after.bias, before.bias)
        inside = np.abs(before.weight) <= bound
        np.testing.assert_array_equal(after.weight[inside], before.weight[inside])


def test_bad_inputs():
    gen, disc = _generator(), _discriminator()
    with pytest.raises(ValueError, match="initial noise `y0` must have shape"):
        gen(jnp.zeros(3), TS, key=jr.key(0))
    with pytest.raises(ValueError, match="`key` is needed"):
        gen(None, TS)
    with pytest.raises(ValueError, match="`ts`"):
        gen(None, key=jr.key(0))
    path = gen(None, TS, key=jr.key(0))
    with pytest.raises(ValueError, match="`times` must be strictly increasing"):
        disc((TS[::-1], path))
    with pytest.raises(ValueError, match="`times` of shape"):
        disc((TS[:4], path))
    with pytest.raises(ValueError, match="`ts` must be None"):
        disc((TS, path), TS)
    with pytest.raises(ValueError, match="`real` must have shape"):
        wasserstein_loss(gen, disc, TS, path, key=jr.key(0))
    with pytest.raises(ValueError, match="`noise_size`"):
        SDEGenerator(1, 2, 0, 3, t1=1.0, dt0=0.1, key=jr.key(0))


def _w1(a, b):
    """1-D Wasserstein-1 distance of two equal-size samples: mean |sorted a - sorted b|."""
    return float(np.mean(np.abs(np.sort(np.asarray(a)) - np.sort(np.asarray(b)))))


@functools.cache
def _trained_distances():
    # The protocol is `neurde.experiments.stochastic_sde_gan.train_sde_gan` at size "quick"
    # (`neurde run stochastic --only sde_gan`): OU dX = -X dt + 0.5 dW, X0 = 1 on [0, 2], 9
    # times, 1024 paths; 800 steps of batch 64, Adam(b1=0.5) with two timescales (1e-3 for
    # the generator, 4e-3 for the discriminator); the generator evaluated is the average of
    # its weights over the second half of training (stochastic weight averaging, as in the
    # paper), which damps the game's oscillations.
    from neurde.experiments.stochastic_sde_gan import train_sde_gan

    numbers, _ = train_sde_gan("quick", 0)
    before = [m["untrained"] for m in numbers["marginals"]]
    after = [m["trained"] for m in numbers["marginals"]]
    print(f"W1 at t = 0.5, 1, 2: untrained {before}, trained {after}")
    return before, after, numbers["finite"]


@pytest.mark.slow
def test_gan_training_stays_finite():
    assert _trained_distances()[2]


# Measured (protocol in `_trained_distances`, seed 0, 21-53 s on one core): W1 untrained
# 0.884, 0.651, 0.477 and trained 0.120, 0.135, 0.127 at t = 0.5, 1, 2: 7.4x, 4.8x and 3.8x
# better (seed 1: 21x, 12x, 5.2x). The averaged generator stays at 3.2-3.8x at t = 2 from
# step 500 to 800. With one learning rate (5e-4) for both players t = 2 stalled at 2.7x.
@pytest.mark.expensive
def test_acceptance_learns_ornstein_uhlenbeck_marginals():
    before, after, _ = _trained_distances()
    for b, a in zip(before, after, strict=True):
        assert a * 3 <= b
