"""AugmentedODE: closed forms for linear fields, readouts, gradients against finite
differences, the family's behavior (vmap, fit, ensembles, checkpoints, noise), the
concentric annuli data, the errors, and (slow) the acceptance tasks of the paper."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.linalg
import numpy as np
import optax
import pytest
from conftest import central_differences

import neurde
from neurde import noise
from neurde.continuous import AugmentedODE
from neurde.data import concentric_annuli

A = np.array([[0.0, -1.0, 0.3], [1.0, 0.1, 0.0], [0.2, 0.5, -0.4]])
X = jnp.array([0.3, -0.7])
TIGHT = {"rtol": 1e-10, "atol": 1e-12, "t1": 1.0}


def _small(key=0, **kw):
    kw = {"width_size": 8, "depth": 1, "t1": 1.0, **kw}
    return AugmentedODE(2, 1, key=jr.key(key), **kw)


def test_zero_augmentation_matches_the_matrix_exponential():
    with jax.enable_x64(True):
        model = AugmentedODE(2, 1, neurde.LinearField(A), readout="all", **TIGHT)
        x = jnp.asarray(X, jnp.float64)
        z0 = jnp.concatenate([x, jnp.zeros(1)])
        ts = jnp.array([0.25, 0.5, 1.0])
        exact = jnp.stack([jax.scipy.linalg.expm(A * t) @ z0 for t in ts])
        np.testing.assert_allclose(model(x, ts), exact, rtol=1e-8, atol=1e-10)
        first = AugmentedODE(2, 1, neurde.LinearField(A), **TIGHT)
        np.testing.assert_allclose(first(x), exact[-1, :2], rtol=1e-8, atol=1e-10)
        assert model(x).dtype == jnp.float64


def test_readouts_apply_at_every_save_time_and_stats_pass_through():
    model = _small(readout="linear", out_size=3, augmentation="mlp")
    ts = jnp.array([0.5, 1.0])
    solution = model.solve(X, ts)
    inner = model.model.solve(model.lift(X), ts)
    assert model.readout is not None
    np.testing.assert_allclose(solution.ys, jax.vmap(model.readout)(inner.ys), rtol=1e-6)
    assert solution.ys.shape == (2, 3)
    assert int(solution.stats["nfe"]) == int(inner.stats["nfe"]) > 0
    # The learned augmentation is a function of x: a (x) != 0 in general.
    assert model.augmentation is not None
    np.testing.assert_allclose(model.lift(X)[2:], model.augmentation(X), rtol=1e-6)
    model = _small(readout=jnp.sum)
    np.testing.assert_allclose(model(X), jnp.sum(model.model(model.lift(X))), rtol=1e-6)


def test_the_augmented_channels_move_a_1d_point_around_another():
    # A rotation by pi in the (x, a) plane maps x to -x: what no 1-D flow can do.
    rotation = np.pi * np.array([[0.0, -1.0], [1.0, 0.0]])
    with jax.enable_x64(True):
        model = AugmentedODE(1, 1, neurde.LinearField(rotation), **TIGHT)
        xs = jnp.linspace(-1.0, 1.0, 5)[:, None]
        np.testing.assert_allclose(jax.vmap(model)(xs), -xs, atol=1e-8)


def test_gradients_match_central_differences():
    with jax.enable_x64(True):
        model = AugmentedODE(
            2, 2, width_size=6, depth=1, augmentation="linear", readout="linear",
            out_size=1, key=jr.key(0), **TIGHT,
        )  # fmt: skip
        x = jnp.asarray(X, jnp.float64)

        @jax.jit
        def loss(x):
            return jnp.sum(model(x) ** 2)

        np.testing.assert_allclose(
            jax.grad(loss)(x), central_differences(loss, x), rtol=1e-6, atol=1e-9
        )
        # Through the parameters of the learned augmentation too.
        assert isinstance(model.augmentation, eqx.nn.Linear)
        bias = model.augmentation.bias
        assert bias is not None

        @jax.jit
        def by_bias(b):
            return loss_of(eqx.tree_at(lambda m: m.augmentation.bias, model, b))

        def loss_of(m):
            return jnp.sum(m(x) ** 2)

        np.testing.assert_allclose(
            jax.grad(by_bias)(bias), central_differences(by_bias, bias), rtol=1e-6, atol=1e-9
        )


def test_vmap_matches_a_loop():
    model = _small(augmentation="linear")
    xs = jr.normal(jr.key(1), (4, 2))
    batched = jax.vmap(model)(xs)
    np.testing.assert_allclose(batched, jnp.stack([model(x) for x in xs]), rtol=1e-5, atol=1e-6)


def _loss(model, batch, key):
    x, y = batch
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def test_fit_decreases_the_loss():
    x = jr.uniform(jr.key(2), (32, 1), minval=-1, maxval=1)
    model = AugmentedODE(1, 1, width_size=8, depth=1, key=jr.key(3), t1=1.0)
    optim = optax.adam(1e-2)
    result = neurde.fit(model, _loss, (x, -x), steps=15, key=jr.key(4), optim=optim, progress=False)
    losses = np.asarray(result.history.loss)
    assert losses[-1] < 0.9 * losses[0]
    assert isinstance(result.model, AugmentedODE)


def test_ensemble_and_checkpoint_round_trip(tmp_path):
    ensemble = neurde.make_ensemble(
        lambda k: AugmentedODE(2, 1, width_size=8, depth=1, augmentation="linear", key=k, t1=1.0),
        3,
        key=jr.key(5),
    )
    out = eqx.filter_vmap(lambda m: m(X))(ensemble)
    assert out.shape == (3, 2)
    for i in range(3):
        member = neurde.ensemble_member(ensemble, i)
        np.testing.assert_allclose(out[i], member(X), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0], out[1])
    model = neurde.ensemble_member(ensemble, 0)
    neurde.save(tmp_path / "aug.eqx", model)
    loaded = neurde.load(tmp_path / "aug.eqx", _small(key=9, augmentation="linear"))
    np.testing.assert_array_equal(loaded(X), model(X))


def test_noise_acts_on_the_inner_ode():
    model = _small(solver=neurde.RK4(), dt0=0.1)
    noisy = noise.additive(model, 0.1, dt0=0.1)
    assert isinstance(noisy, AugmentedODE)
    by_hand = AugmentedODE(2, 1, noise.additive(model.model, 0.1, dt0=0.1))
    key = jr.key(6)
    np.testing.assert_array_equal(noisy(X, key=key), by_hand(X, key=key))
    assert not np.allclose(noisy(X, key=key), model(X), atol=1e-4)
    # In inference mode the noise is off: the SDE solver with zero diffusion is the ODE step.
    quiet = eqx.nn.inference_mode(noisy)
    np.testing.assert_allclose(quiet(X), model(X), rtol=1e-4, atol=1e-5)
    penalized = noise.rnode(_small(), estimator="exact")
    extras = penalized.solve(X).extras
    assert set(extras) == {"kinetic", "jacobian"} and float(extras["kinetic"]) > 0


def test_concentric_annuli():
    data = concentric_annuli(200, 100, key=jr.key(0))
    assert data.x_train.shape == (200, 2) and data.x_test.shape == (100, 2)
    assert data.num_classes == 2 and data.name == "annuli"
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        r = np.linalg.norm(np.asarray(x), axis=1)
        y = np.asarray(y)
        assert np.all(r[y == 0] <= 0.5 + 1e-6)
        assert np.all((r[y == 1] >= 1.0 - 1e-6) & (r[y == 1] <= 1.5 + 1e-6))
        assert (y == 0).sum() == (y == 1).sum()
    wide = concentric_annuli(50, 50, dim=3, radii=(1.0, 2.0, 3.0), key=jr.key(1))
    r = np.linalg.norm(np.asarray(wide.x_train), axis=1)
    assert wide.x_train.shape == (50, 3) and r.max() > 2.0
    with pytest.raises(ValueError, match=r"concentric_annuli\(..., radii=.*three increasing"):
        concentric_annuli(10, 10, radii=(1.0, 0.5, 2.0), key=jr.key(0))
    with pytest.raises(ValueError, match=r"`n_train` must be >= 2"):
        concentric_annuli(1, 10, key=jr.key(0))
    with pytest.raises(TypeError, match=r"`key` must be a single JAX PRNG key"):
        concentric_annuli(10, 10, key=0)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("augment", [-1, 0, 1.5, True])
def test_augment_must_be_a_positive_int(augment):
    with pytest.raises(
        ValueError,
        match=rf"AugmentedODE: `augment` must be a positive int, got {augment!r}\. Pass "
        rf"e\.g\. augment=2",
    ):
        AugmentedODE(2, augment, key=jr.key(0))


def test_construction_errors():
    with pytest.raises(ValueError, match=r"AugmentedODE: `in_size` must be a positive int, got 0"):
        AugmentedODE(0, 1, key=jr.key(0))
    field = neurde.MLPField(2, 4, key=jr.key(0))
    with pytest.raises(
        ValueError,
        match=r"field is built for states of size 2, but the solved state has size 3\. "
        r"Build it with `MLPField\(3",
    ):
        AugmentedODE(2, 1, field)
    with pytest.raises(
        ValueError,
        match=r"AugmentedODE: a `key` is needed to initialize the default MLPField",
    ):
        AugmentedODE(2, 1)
    with pytest.raises(
        ValueError,
        match=r"`augmentation` must be 'zeros', 'linear', 'mlp' .* got 'ones'",
    ):
        AugmentedODE(2, 1, key=jr.key(0), augmentation="ones")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"`readout` must be 'first', 'all', 'linear' .* got 3"):
        AugmentedODE(2, 1, key=jr.key(0), readout=3)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"`out_size=1` only applies to `readout='linear'`"):
        AugmentedODE(2, 1, key=jr.key(0), out_size=1)
    inner = neurde.NeuralODE(neurde.MLPField(3, 4, key=jr.key(0)), t1=1.0)
    with pytest.raises(
        ValueError,
        match=r"solver settings \['rtol'\] were given with an inner model",
    ):
        AugmentedODE(2, 1, inner, rtol=1e-4)
    assert AugmentedODE(2, 1, inner).model is inner


def test_call_errors():
    model = _small()
    with pytest.raises(
        ValueError,
        match=r"AugmentedODE: the input must have shape \(2,\) \(in_size\), got \(4, "
        r"2\)\. Call the model on one example",
    ):
        model(jnp.ones((4, 2)))
    with pytest.raises(TypeError, match=r"AugmentedODE: the input has dtype int32"):
        model(jnp.array([1, 2]))
    bad = _small(augmentation=lambda x: jnp.zeros(2))
    with pytest.raises(
        ValueError,
        match=r"augmentation returned shape \(2,\), but \(1,\) \(augment\)",
    ):
        bad(X)
    # A callable field built for the wrong size fails when the inner solve is traced.
    wrong = AugmentedODE(2, 1, lambda t, y, args: jnp.zeros(2), t1=1.0)
    with pytest.raises(
        ValueError,
        match=r"NeuralODE: the vector field returns shape \(2,\), but shape \(3,\)",
    ):
        wrong(X)


def test_zoo_models_and_size_check():
    from neurde.experiments import zoo_augmented

    models = zoo_augmented.annuli_models(4, key=jr.key(0))
    assert isinstance(models["augmented"], AugmentedODE)
    assert models["augmented"](X).shape == (1,) and models["plain"](X).shape == (1,)
    with pytest.raises(ValueError, match=r"zoo augmented: `size` must be one of"):
        zoo_augmented.train_annuli("tiny")


@pytest.mark.expensive
def test_acceptance_annuli():
    from neurde.experiments.zoo_augmented import train_annuli

    numbers, _ = train_annuli(size="quick", seed=0)
    assert numbers["augmented_accuracy"] >= 0.99
    assert (
        numbers["plain_accuracy"] < numbers["augmented_accuracy"]
        or numbers["plain_nfe"] > numbers["augmented_nfe"]
    )


@pytest.mark.expensive
def test_acceptance_reflection():
    from neurde.experiments.zoo_augmented import train_reflection

    numbers, _ = train_reflection(size="quick", seed=0)
    assert numbers["augmented_mse"] < 1e-3
    assert numbers["plain_mse"] > 0.1  # the best monotone map, x -> 0, has MSE 1/3
