"""The fast fixed-step path of `NeuralSDE` (neurde/_scan_solve.py): one `lax.scan` that draws
the Brownian increments in its loop.

It must be the same computation as `diffrax.diffeqsolve` on a `neurde.GridBrownianPath` from
the same key (forward values, save-time interpolation, extras, NFE and gradients), be chosen
by default exactly where the grid is exact, give each example a path that depends on its key
only (not on the batch split), and have the statistics of the virtual-Brownian-tree solve.
"""

from unittest import mock

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import central_differences

import neurde
from neurde.data import ou_mean, ou_variance

D = 3
THETA, MU, SIGMA = 1.5, 0.5, 0.8


def _nets(dtype=None):
    drift = neurde.MLPField(D, 8, 1, time_dependent=True, activation=jnp.tanh, key=jr.key(0))
    net = neurde.MLPField(D, 8, 1, activation=jnp.tanh, key=jr.key(1))
    if dtype is not None:
        drift, net = (
            jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, m)
            for m in (drift, net)
        )
    return drift, net


def _diagonal(net, t, y, a):
    return 0.3 * jax.nn.sigmoid(net(t, y, a))


def _general(net, t, y, a):
    return jnp.outer(_diagonal(net, t, y, a), jnp.array([1.0, -0.5]))


def _diffusion(net, noise):
    # `eqx.Partial` keeps the net's parameters visible (a lambda closing over it would hide
    # them from the gradients compared below, and FunctionField warns about that).
    return eqx.Partial(_general if noise == "general" else _diagonal, net)


def _pair(solver, noise, **kwargs):
    """The same SDE on the scan path and (DirectAdjoint) through diffeqsolve."""
    drift, net = _nets()
    settings = dict(
        solver=solver,
        stepsize_controller=diffrax.ConstantStepSize(),
        noise=noise,
        noise_size=2 if noise == "general" else None,
        dt0=0.05,
        t1=1.0,
        brownian="grid",
        **kwargs,
    )
    fast = neurde.NeuralSDE(drift, _diffusion(net, noise), **settings)
    slow = neurde.NeuralSDE(
        drift, _diffusion(net, noise), adjoint=diffrax.DirectAdjoint(), **settings
    )
    return fast, slow


def _uses_scan(model, y0, ts=None):
    """Whether tracing a call of `model` stays off `diffrax.diffeqsolve`."""
    calls = []
    original = diffrax.diffeqsolve

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    with mock.patch.object(diffrax, "diffeqsolve", counting):
        jax.make_jaxpr(lambda y: model(y, ts, key=jr.key(0)))(y0)
    return not calls


# Every noise structure and both solvers appear; the gradient test below adds Heun, diagonal.
@pytest.mark.parametrize(
    ("solver", "noise"),
    [(diffrax.Euler(), "diagonal"), (diffrax.Euler(), "general"), (diffrax.Heun(), "scalar")],
    ids=["euler-diagonal", "euler-general", "heun-scalar"],
)
def test_scan_path_is_diffeqsolve_on_the_grid_path(solver, noise):
    with jax.enable_x64(True):
        fast, slow = _pair(solver, noise)
        y0 = jnp.array([0.5, -0.2, 0.1])
        # Save times between grid points exercise the dense output (linear for Euler,
        # Diffrax's cubic Hermite for Heun).
        ts = jnp.array([0.1, 0.33, 0.5, 0.777, 1.0])
        assert _uses_scan(fast, y0, ts) and not _uses_scan(slow, y0, ts)
        for save in (None, ts):
            a, b = fast.solve(y0, save, key=jr.key(3)), slow.solve(y0, save, key=jr.key(3))
            np.testing.assert_allclose(a.ys, b.ys, rtol=0, atol=1e-13)
            for name in ("nfe", "num_steps", "num_accepted_steps", "num_rejected_steps"):
                assert int(a.stats[name]) == int(b.stats[name]), name
        per_step = 2 if isinstance(solver, diffrax.Heun) else 1
        assert int(fast.solve(y0, key=jr.key(3)).stats["nfe"]) == 20 * per_step

        def loss(model, y):
            return jnp.sum(jnp.sin(model(y, ts, key=jr.key(3))))

        g_fast = eqx.filter_grad(loss)(fast, y0)
        g_slow = eqx.filter_grad(loss)(slow, y0)
        for x, y in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_slow), strict=True):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-12)


def test_extras_are_integrated_on_the_scan_path():
    # RNODE's penalties over a grid SDE: the same integrals as through diffeqsolve.
    with jax.enable_x64(True):
        fast, slow = _pair(diffrax.Euler(), "diagonal")
        y0 = jnp.array([0.5, -0.2, 0.1])
        for ts in (None, jnp.array([0.25, 1.0])):
            a = neurde.noise.rnode(fast, estimator="exact").solve(y0, ts, key=jr.key(1))
            b = neurde.noise.rnode(slow, estimator="exact").solve(y0, ts, key=jr.key(1))
            np.testing.assert_allclose(a.ys, b.ys, atol=1e-13)
            for name in ("kinetic", "jacobian"):
                assert float(a.extras[name]) > 0
                np.testing.assert_allclose(a.extras[name], b.extras[name], rtol=1e-12)


def test_gradient_matches_finite_differences():
    # With the key fixed the path is fixed, so the solve is a smooth function of y0.
    with jax.enable_x64(True):
        fast, _ = _pair(diffrax.Heun(), "diagonal")

        def f(y):
            return jnp.sum(fast(jnp.asarray(y), jnp.array([0.4, 1.0]), key=jr.key(2)) ** 2)

        y0 = np.array([0.3, -0.4, 0.2])
        np.testing.assert_allclose(
            jax.grad(f)(jnp.asarray(y0)), central_differences(f, y0), rtol=1e-7
        )


def test_grid_is_the_default_exactly_where_it_is_exact():
    drift, net = _nets()
    g = _diffusion(net, "diagonal")
    y0 = jnp.ones(D)
    on_grid = neurde.NeuralSDE(drift, g, dt0=0.1, t1=1.0)
    assert _uses_scan(on_grid, y0)
    # Steps that do not divide the interval, an explicit tree, a tolerance for the tree, a
    # solver that needs Lévy areas, adaptive steps: the virtual Brownian tree.
    tree_cases = [
        neurde.NeuralSDE(drift, g, dt0=0.3, t1=1.0),
        neurde.NeuralSDE(drift, g, dt0=0.1, t1=1.0, brownian="tree"),
        neurde.NeuralSDE(drift, g, dt0=0.1, t1=1.0, brownian_tol=0.01),
        neurde.NeuralSDE(drift, g, dt0=0.1, t1=1.0, solver=diffrax.SPaRK()),
        neurde.NeuralSDE(drift, g, dt0=0.1, t1=1.0, solver=diffrax.Heun(), rtol=1e-3, atol=1e-3),
    ]
    for model in tree_cases:
        assert not _uses_scan(model, y0)
        assert np.all(np.isfinite(model(y0, key=jr.key(0))))
    # The default grid path is the explicit one.
    explicit = neurde.NeuralSDE(drift, g, dt0=0.1, t1=1.0, brownian="grid")
    np.testing.assert_array_equal(on_grid(y0, key=jr.key(4)), explicit(y0, key=jr.key(4)))


def test_same_key_same_path_whatever_the_batch_split():
    drift, net = _nets()
    model = neurde.NeuralSDE(drift, _diffusion(net, "diagonal"), dt0=0.05, t1=1.0)
    ys = jr.normal(jr.key(5), (8, D))
    keys = jr.split(jr.key(6), 8)
    ts = jnp.linspace(0.1, 1.0, 4)
    run = jax.jit(jax.vmap(lambda y, k: model(y, ts, key=k)))
    whole = run(ys, keys)
    halves = jnp.concatenate([run(ys[:4], keys[:4]), run(ys[4:], keys[4:])])
    one = jnp.stack([model(ys[i], ts, key=keys[i]) for i in (0, 5)])
    np.testing.assert_allclose(whole, halves, rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole[jnp.array([0, 5])], one, rtol=0, atol=1e-6)
    assert np.max(np.abs(whole[0] - whole[1])) > 1e-3  # and different keys differ


def test_ou_statistics_match_the_tree_and_the_closed_form():
    # OU dy = theta (mu - y) dt + sigma dW, Euler–Maruyama with dt = 0.01: the scan path's
    # mean and variance at three times against the tree path's (a two-sample test) and
    # against the closed form (plus Euler's O(dt) bias, ~1.5% here).
    n = 4000
    kwargs = dict(dt0=0.01, t1=1.0)
    drift = lambda t, y, a: THETA * (MU - y)  # noqa: E731
    diffusion = lambda t, y, a: SIGMA * jnp.ones_like(y)  # noqa: E731
    scan = neurde.NeuralSDE(drift, diffusion, **kwargs)
    tree = neurde.NeuralSDE(drift, diffusion, brownian="tree", **kwargs)
    ts = jnp.array([0.2, 0.5, 1.0])
    y0 = jnp.array([2.0])
    assert _uses_scan(scan, y0, ts) and not _uses_scan(tree, y0, ts)
    samples = {}
    for name, model in (("scan", scan), ("tree", tree)):
        keys = jr.split(jr.key(7 if name == "scan" else 8), n)
        paths = eqx.filter_jit(eqx.filter_vmap(lambda m, k: m(y0, ts, key=k), in_axes=(None, 0)))
        samples[name] = np.asarray(paths(model, keys))[..., 0]
    exact_mean = np.asarray(ou_mean(ts, 2.0, THETA, MU))
    exact_var = np.asarray(ou_variance(ts, THETA, SIGMA))
    se_mean, se_var = np.sqrt(exact_var / n), exact_var * np.sqrt(2 / n)
    a, b = samples["scan"], samples["tree"]
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < 4 * np.sqrt(2) * se_mean)
    assert np.all(np.abs(a.var(0) - b.var(0)) < 4 * np.sqrt(2) * se_var)
    assert np.all(np.abs(a.mean(0) - exact_mean) < 4 * se_mean + 0.02 * np.abs(exact_mean))
    assert np.all(np.abs(a.var(0) - exact_var) < 4 * se_var + 0.03 * exact_var)


def test_too_many_steps_is_a_clear_error():
    drift, net = _nets()
    model = neurde.NeuralSDE(drift, _diffusion(net, "diagonal"), dt0=0.01, t1=1.0, max_steps=50)
    with pytest.raises(ValueError, match=r"NeuralSDE: the solve takes 100 steps .* `max_steps=50`"):
        model(jnp.ones(D), key=jr.key(0))


def test_float32_and_float64_states_keep_their_dtype():
    drift, net = _nets()
    model = neurde.NeuralSDE(drift, _diffusion(net, "diagonal"), dt0=0.1, t1=1.0)
    assert model(jnp.ones(D, jnp.float32), key=jr.key(0)).dtype == jnp.float32
    with jax.enable_x64(True):
        drift64, net64 = _nets(jnp.float64)
        model64 = neurde.NeuralSDE(drift64, _diffusion(net64, "diagonal"), dt0=0.1, t1=1.0)
        assert model64(jnp.ones(D, jnp.float64), key=jr.key(0)).dtype == jnp.float64


def test_grid_with_a_traced_end_time_is_a_clear_error():
    # Without `t1` the end time is the last save time, traced under vmap; the default then
    # picks the tree, an explicit grid cannot be built.
    drift, net = _nets()
    ts = jnp.ones((2, 3)) * jnp.array([0.2, 0.6, 1.0])
    kwargs = dict(dt0=0.1)
    grid = neurde.NeuralSDE(drift, _diffusion(net, "diagonal"), brownian="grid", **kwargs)
    with pytest.raises(ValueError, match=r"brownian='grid' .* Give the model its end time"):
        jax.vmap(lambda t: grid(jnp.ones(D), t, key=jr.key(0)))(ts)
    auto = neurde.NeuralSDE(drift, _diffusion(net, "diagonal"), **kwargs)
    assert jax.vmap(lambda t: auto(jnp.ones(D), t, key=jr.key(0)))(ts).shape == (2, 3, D)
