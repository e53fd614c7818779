"""Ensembles: one stacked module, trained and evaluated with `vmap`, equal to a Python loop."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
import scipy.linalg

import neurde

N = 4


def _make_model(key):
    # A linear field: the exact flow expm(A t) is known, and the module has no non-array
    # leaves (see test_ensembles_of_mlp_fields for models that do).
    field = neurde.LinearField.random(2, key=key)
    return neurde.NeuralODE(field, t1=1.0, solver=neurde.RK4(), dt0=0.1)


def _make_mlp_model(key):
    field = neurde.MLPField(2, width_size=8, depth=1, key=key)
    return neurde.NeuralODE(field, t1=1.0, solver=neurde.RK4(), dt0=0.1)


def _noisy_loss(model, batch, key):
    # Key-dependent, so that the per-member keys are checked as well. One example: vmapping
    # the solve over a batch as well would double the compile time of the steps.
    y0, y1 = batch
    noise = 0.1 * jr.normal(key, y1.shape)
    return jnp.mean((model(y0) - y1 - noise) ** 2)


@pytest.fixture(scope="module")
def ensemble():
    return neurde.make_ensemble(_make_model, N, key=jr.key(0))


@pytest.fixture(scope="module")
def batch():
    y0 = jnp.array([0.6, -0.8])
    return y0, jnp.array([y0[1], -y0[0]])


def test_members_are_distinct_independent_models(ensemble):
    assert neurde.ensemble_size(ensemble) == N
    assert ensemble.tolerances.rtol.shape == (N,)
    keys = jr.split(jr.key(0), N)
    members = [neurde.ensemble_member(ensemble, i) for i in range(N)]
    for i, member in enumerate(members):
        # Member i is exactly the model built from the i-th key.
        np.testing.assert_array_equal(member.field.matrix, _make_model(keys[i]).field.matrix)
    matrices = [np.asarray(m.field.matrix) for m in members]
    for i in range(N):
        for j in range(i):
            assert np.abs(matrices[i] - matrices[j]).max() > 0.1


def test_ensemble_step_equals_a_loop_over_members(ensemble, batch):
    optim = optax.adam(1e-2)
    ens_step = neurde.make_ensemble_step(_noisy_loss, optim)
    ens, ens_opt = ensemble, neurde.ensemble_init_optimizer(optim, ensemble)
    step = neurde.make_step(_noisy_loss, optim)
    members = [neurde.ensemble_member(ensemble, i) for i in range(N)]
    opts = [neurde.init_optimizer(optim, m) for m in members]
    for s in range(2):
        key = jr.key(10 + s)
        ens, ens_opt, losses, _ = ens_step(ens, ens_opt, batch, key)
        assert losses.shape == (N,)
        for i in range(N):
            members[i], opts[i], loss, _ = step(members[i], opts[i], batch, jr.split(key, N)[i])
            # float32: the vmapped and the unbatched compilations round differently.
            np.testing.assert_allclose(losses[i], loss, rtol=1e-5)
    for i in range(N):
        for a, b in zip(
            jax.tree.leaves(neurde.ensemble_member(ens, i)),
            jax.tree.leaves(members[i]),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(
            jax.tree.leaves(neurde.ensemble_member(ens_opt, i)),
            jax.tree.leaves(opts[i]),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    # The steps did something: Adam moved every parameter by about 2 * lr.
    moved = np.abs(np.asarray(ens.field.matrix - ensemble.field.matrix))
    assert moved.min() > 1e-3


def test_ensemble_predict_is_mean_and_std_over_members(ensemble):
    x = jnp.array([0.3, -0.7])
    mean, std = neurde.ensemble_predict(ensemble, x)
    preds = np.stack([np.asarray(neurde.ensemble_member(ensemble, i)(x)) for i in range(N)])
    np.testing.assert_allclose(mean, preds.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(std, preds.std(axis=0), rtol=1e-4, atol=1e-7)
    # Distinct members disagree.
    assert np.all(np.asarray(std) > 1e-2)
    # Each member solves dy/dt = A_i y: y(1) = expm(A_i) x, up to RK4 error at dt = 0.1.
    exact = np.stack(
        [scipy.linalg.expm(np.asarray(ensemble.field.matrix[i], np.float64)) @ x for i in range(N)]
    )
    np.testing.assert_allclose(mean, exact.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std, exact.std(axis=0), rtol=1e-4, atol=1e-5)


def test_fit_trains_an_ensemble_like_separate_fits():
    # A cheap model: `fit(ensemble=True)` is checked against make_step on each member.
    x = jr.normal(jr.key(2), (16, 3))
    data = (x, x @ jnp.array([[1.0, 0.0], [0.5, -1.0], [0.0, 2.0]]))

    def mse(model, batch, key):
        del key
        x, y = batch
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    ens = neurde.make_ensemble(lambda k: eqx.nn.Linear(3, 2, key=k), 3, key=jr.key(3))
    optim = optax.sgd(0.1)
    result = neurde.fit(
        ens, mse, data, steps=5, key=jr.key(4), optim=optim, ensemble=True, progress=False
    )
    losses = np.stack(result.history.loss)
    assert losses.shape == (5, 3)
    assert np.all(losses[-1] < losses[0])
    step = neurde.make_step(mse, optim)
    for i in range(3):
        member = neurde.ensemble_member(ens, i)
        opt_state = neurde.init_optimizer(optim, member)
        for s in range(5):
            member, opt_state, loss, _ = step(member, opt_state, data, jr.key(s))
            np.testing.assert_allclose(losses[s, i], loss, rtol=1e-5)
        trained = neurde.ensemble_member(result.model, i)
        np.testing.assert_allclose(trained.weight, member.weight, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(trained.bias, member.bias, rtol=1e-5, atol=1e-6)


def test_ensembles_of_mlp_fields(batch):
    # The docstring's example model: a neural ODE with an MLP field.
    ens = neurde.make_ensemble(_make_mlp_model, 2, key=jr.key(5))
    x = jnp.array([0.3, -0.7])
    mean, _ = neurde.ensemble_predict(ens, x)
    preds = [neurde.ensemble_member(ens, i)(x) for i in range(2)]
    np.testing.assert_allclose(mean, np.mean(preds, axis=0), rtol=1e-5, atol=1e-7)
    optim = optax.sgd(1e-2)
    step = neurde.make_ensemble_step(_noisy_loss, optim)
    _, _, losses, _ = step(ens, neurde.ensemble_init_optimizer(optim, ens), batch, jr.key(6))
    member_step = neurde.make_step(_noisy_loss, optim)
    for i in range(2):
        member = neurde.ensemble_member(ens, i)
        opt_state = neurde.init_optimizer(optim, member)
        _, _, loss, _ = member_step(member, opt_state, batch, jr.split(jr.key(6), 2)[i])
        np.testing.assert_allclose(losses[i], loss, rtol=1e-5)


@pytest.mark.parametrize("n", [0, -2, 2.0])
def test_make_ensemble_needs_a_positive_integer(n):
    with pytest.raises(ValueError, match=rf"make_ensemble: `n` must be an integer >= 1, got {n}"):
        neurde.make_ensemble(_make_model, n, key=jr.key(0))
