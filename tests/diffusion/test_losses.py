"""DSM losses with the exact score, time sampling, EMA and the score networks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from conftest import central_differences

import neurde
import neurde.diffusion as nd

MEAN = jnp.array([0.5, -0.3])
COV = jnp.array([[1.0, 0.6], [0.6, 0.8]])
N = 40_000


def data(n, key):
    return MEAN + jr.normal(key, (n, 2)) @ jnp.linalg.cholesky(COV).T


def dsm_minimum(sde, t, weighting):
    """E ||s*(x_t) + z / sigma||^2 times lambda(t): lambda (d / sigma^2 - tr Sigma_t^{-1})."""
    score = nd.GaussianScore(sde, MEAN, COV)
    var = np.asarray(score.marginal_variances(t), np.float64)
    sigma2 = float(sde.std(t)) ** 2
    lam = {"score": sigma2, "likelihood": float(sde.diffusion(t)) ** 2, "none": 1.0}[weighting]
    return lam * (2 / sigma2 - np.sum(1 / var))


@eqx.filter_jit
def losses_at(model, sde, x0, t, keys, parameterization, weighting):
    def one(x, k):
        return nd.denoising_score_matching(
            model, sde, x, t, parameterization=parameterization, weighting=weighting, key=k
        )

    return jax.vmap(one)(x0, keys)


@pytest.mark.parametrize(
    ("sde", "weighting"),
    [
        (nd.VPSDE(), "score"),
        (nd.VPSDE(), "likelihood"),
        (nd.VPSDE(), "none"),
        (nd.VESDE(), "score"),
    ],
)
def test_exact_score_attains_the_known_dsm_minimum(sde, weighting):
    # E over x0 ~ N(m, S), z of lambda ||s*(x_t) + z/sigma||^2 equals
    # lambda (d/sigma^2 - tr Sigma_t^{-1}) (the Fisher information of p_t is Sigma_t^{-1}).
    # Tolerance: 4 standard errors of the Monte Carlo mean. The noise parameterization
    # of the same model gives the same per-example losses.
    t = 0.3
    score = nd.GaussianScore(sde, MEAN, COV)
    x0, keys = data(N, jr.key(0)), jr.split(jr.key(1), N)
    values = np.asarray(losses_at(score, sde, x0, t, keys, "score", weighting), np.float64)
    expected = dsm_minimum(sde, t, weighting)
    assert abs(values.mean() - expected) < 4 * values.std() / np.sqrt(N), (values.mean(), expected)
    if weighting == "likelihood":
        noise_model = nd.Score(score, sde, "score").noise
        as_noise = losses_at(noise_model, sde, x0, t, keys, "noise", weighting)
        np.testing.assert_allclose(as_noise, values, rtol=2e-3, atol=1e-5)


def test_exact_score_is_a_stationary_point_and_perturbations_cost_lambda_d_c2():
    # Adding a constant c to the exact score: E loss(c) = E loss(0) + lambda d c^2 (here
    # lambda = 1, d = 2), so the derivative at c = 0 vanishes, and loss(c) - loss(0) with
    # common random numbers estimates 2 c^2. Tolerances: 4 standard errors.
    sde, t = nd.VPSDE(), 0.5
    score = nd.GaussianScore(sde, MEAN, COV)
    x0, keys = data(N, jr.key(2)), jr.split(jr.key(3), N)

    def one(c, x, k):
        shifted = lambda t, y, args: score(t, y) + c  # noqa: E731
        return nd.denoising_score_matching(
            shifted, sde, x, t, parameterization="score", weighting="none", key=k
        )

    per_example = jax.jit(jax.vmap(jax.value_and_grad(one), in_axes=(None, 0, 0)))
    base, grads = (np.asarray(a, np.float64) for a in per_example(0.0, x0, keys))
    assert abs(grads.mean()) < 4 * grads.std() / np.sqrt(N)
    for c in (-0.3, 0.2):
        diff = np.asarray(per_example(c, x0, keys)[0], np.float64) - base
        assert diff.mean() > 0
        assert abs(diff.mean() - 2 * c**2) < 4 * diff.std() / np.sqrt(N)


def test_low_discrepancy_times_are_stratified():
    sde, eps, b = nd.VPSDE(), 1e-5, 64
    for seed in range(5):
        t, w = nd.sample_times(sde, b, method="low_discrepancy", eps=eps, key=jr.key(seed))
        u = np.sort((np.asarray(t, np.float64) - eps) / (1 - eps))
        np.testing.assert_array_equal(np.floor(u * b + 1e-4 * (u * b % 1 > 0.5)), np.arange(b))
        np.testing.assert_array_equal(w, 1.0)
        assert np.all((np.asarray(t) >= eps) & (np.asarray(t) <= 1.0))


@pytest.mark.parametrize("sde", [nd.VPSDE(), nd.SubVPSDE(), nd.VESDE()], ids=["VP", "subVP", "VE"])
def test_importance_sampling_is_unbiased_and_reduces_variance(sde):
    # l(t) = the exact DSM minimum under the likelihood weighting. The uniform mean of l
    # over [eps, 1] is computed by quadrature in log t; the importance-weighted Monte Carlo
    # mean must match it within 4 standard errors, with a smaller variance than uniform t.
    eps = 1e-5
    with jax.enable_x64(True):

        def ell(t):
            score = nd.GaussianScore(sde, MEAN.astype(jnp.float64), COV.astype(jnp.float64))
            var = score.marginal_variances(t)
            g2, s2 = sde.diffusion(t) ** 2, sde.std(t) ** 2
            return g2 * (2 / s2 - jnp.sum(1 / var))

        ell = jax.jit(jax.vmap(ell))
        # Trapezoid rule in log t on 200k points: error far below the Monte Carlo's.
        grid = jnp.exp(jnp.linspace(np.log(eps), 0.0, 200_001, dtype=jnp.float64))
        reference = float(jnp.trapezoid(ell(grid) * grid, jnp.log(grid))) / (1 - eps)
        n = 200_000
        t, w = nd.sample_times(sde, n, method="importance", eps=eps, key=jr.key(0))
        weighted = np.asarray(w * ell(t))
        tu, _ = nd.sample_times(sde, n, method="uniform", eps=eps, key=jr.key(1))
        uniform = np.asarray(ell(tu))
    assert abs(weighted.mean() - reference) < 4 * weighted.std() / np.sqrt(n)
    assert weighted.std() < uniform.std()


def test_dsm_loss_batches_and_trains_through_make_step():
    sde = nd.VPSDE()
    net = nd.ScoreMLP(2, 32, 2, key=jr.key(0))
    x0 = data(256, jr.key(1))
    loss = nd.DSMLoss(sde, weighting="likelihood", time_sampling="importance")
    value = loss(net, x0, jr.key(2))
    assert value.shape == () and np.isfinite(value)
    optim = optax.adam(1e-3)
    step = neurde.make_step(nd.DSMLoss(sde, time_sampling="low_discrepancy"), optim)
    state = neurde.init_optimizer(optim, net)
    net2, state, first, aux = step(net, state, x0, jr.key(3))
    assert aux == {} and np.isfinite(first)
    assert np.max(np.abs(net2.mlp.layers[0].weight - net.mlp.layers[0].weight)) > 1e-4
    np.testing.assert_allclose(
        first,
        nd.dsm_loss(net, sde, x0, time_sampling="low_discrepancy", key=jr.key(3)),
        rtol=1e-6,
    )


@pytest.mark.slow
def test_score_mlp_learns_gaussian_data():
    # 2-D Gaussian data, 2000 Adam steps of DSM; Euler–Maruyama samples (500 steps) match
    # the data's mean and covariance to 0.15 (observed 0.06 and 0.04). The deterministic
    # samplers are more sensitive to this network's score error: DPM-Solver-3 at 30 NFE is
    # off by 0.2 in the mean.
    sde = nd.VPSDE()
    net = nd.ScoreMLP(2, 64, 2, key=jr.key(0))
    result = neurde.fit(
        net,
        nd.DSMLoss(sde, time_sampling="low_discrepancy"),
        data(4096, jr.key(1)),
        steps=2000,
        batch_size=256,
        key=jr.key(2),
        optim=optax.adam(2e-3),
        progress=False,
    )
    xs, _ = nd.sample(
        nd.EulerMaruyama(500), nd.Score(result.model, sde), sde, 4000, (2,), key=jr.key(3)
    )
    np.testing.assert_allclose(np.mean(xs, 0), MEAN, atol=0.15)
    np.testing.assert_allclose(np.cov(np.asarray(xs).T), COV, atol=0.15)


def test_ema_update_numerics():
    class Net(eqx.Module):
        w: jax.Array
        count: jax.Array
        name: str = eqx.field(static=True)

    ema = Net(jnp.array([1.0, 2.0]), jnp.array(3), "a")
    new = Net(jnp.array([3.0, -2.0]), jnp.array(7), "a")
    out = nd.ema_update(ema, new, 0.75)
    np.testing.assert_allclose(out.w, [1.5, 1.0])
    assert int(out.count) == 3 and out.name == "a"
    np.testing.assert_array_equal(nd.ema_update(ema, new, 0.0).w, new.w)
    np.testing.assert_array_equal(nd.ema_update(ema, new, 1.0).w, ema.w)
    jitted = jax.jit(nd.ema_update)(ema, new, jnp.asarray(0.5))
    np.testing.assert_allclose(jitted.w, [2.0, 0.0])
    # Ten steps towards a fixed model: the gap shrinks by decay^10.
    for _ in range(10):
        ema = nd.ema_update(ema, new, 0.9)
    np.testing.assert_allclose(ema.w - new.w, 0.9**10 * np.array([-2.0, 4.0]), rtol=1e-5)


def test_score_nets_shapes_and_input_gradient_against_finite_differences():
    with jax.enable_x64(True):
        mlp = nd.ScoreMLP(3, 16, 2, key=jr.key(0))
        conv = nd.ScoreConvNet(4, key=jr.key(1))
        x_vec = jr.normal(jr.key(2), (3,), jnp.float64)
        x_img = jr.normal(jr.key(3), (1, 8, 8), jnp.float64)
        assert mlp(0.3, x_vec).shape == (3,)
        batch = jax.vmap(conv, in_axes=(None, 0))(0.3, jnp.stack([x_img, x_img]))
        assert batch.shape == (2, 1, 8, 8)
        for net, x in ((mlp, x_vec), (conv, x_img)):
            weights = jr.normal(jr.key(4), x.shape, jnp.float64)
            fn = jax.jit(lambda v, net=net, w=weights: jnp.sum(w * net(0.3, v.reshape(w.shape))))
            grad = jax.grad(fn)(x.reshape(-1))
            np.testing.assert_allclose(
                grad, central_differences(fn, x.reshape(-1)), rtol=1e-6, atol=1e-9
            )
    with pytest.raises(ValueError, match=r"ScoreConvNet: the input `y` must be one image of shape"):
        conv(0.5, jnp.ones((8, 8)))


def test_fourier_embedding_is_fixed():
    mlp = nd.ScoreMLP(3, 16, 1, embedding="fourier", key=jr.key(0))
    x = jnp.ones(3)
    assert mlp(0.3, x).shape == (3,)
    grads = eqx.filter_grad(lambda m: jnp.sum(m(0.3, x)))(mlp)
    np.testing.assert_array_equal(grads.embed.frequencies, 0.0)
    assert np.max(np.abs(grads.mlp.layers[0].weight)) > 0
