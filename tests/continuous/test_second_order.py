"""SecondOrderODE and HeavyBallODE: the damped oscillator's closed form, initial velocities,
the learnable damping, gradients against finite differences, the family's behavior (vmap,
fit, ensembles, checkpoints, noise), the errors, and (slow) extrapolation of an oscillator
observed in position only."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from conftest import central_differences

import neurde
from neurde import noise
from neurde.continuous import HeavyBallField, HeavyBallODE, SecondOrderField, SecondOrderODE

TIGHT = {"rtol": 1e-10, "atol": 1e-12, "t1": 2.0}
TS = np.array([0.5, 1.0, 2.0])  # in the default float dtype of each call
ZETA, OMEGA = 0.1, 1.0  # x'' + 0.2 x' + x = 0


def _oscillator(x0, v0, ts):
    """Closed form of x'' + 2 zeta omega x' + omega^2 x = 0: position and velocity."""
    decay, wd = ZETA * OMEGA, OMEGA * np.sqrt(1 - ZETA**2)
    c = np.exp(-decay * ts) * np.cos(wd * ts)
    s = np.exp(-decay * ts) * np.sin(wd * ts) / wd
    x = x0 * c + (v0 + decay * x0) * s
    v = v0 * c - (OMEGA**2 * x0 + decay * v0) * s
    return x, v


def _acceleration(t, y, args):
    return -(OMEGA**2) * y[:1] - 2 * ZETA * OMEGA * y[1:]


def _force(t, h, args):
    return -(OMEGA**2) * h


def test_sonode_matches_the_damped_oscillator():
    with jax.enable_x64(True):
        model = SecondOrderODE(1, _acceleration, initial="given", output="state", **TIGHT)
        x0, v0 = jnp.array([0.7]), jnp.array([-0.3])
        out = model((x0, v0), TS)
        x, v = _oscillator(0.7, -0.3, np.asarray(TS))
        np.testing.assert_allclose(out[:, 0], x, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(out[:, 1], v, rtol=1e-8, atol=1e-10)
        position = SecondOrderODE(1, _acceleration, initial="given", **TIGHT)
        np.testing.assert_allclose(position((x0, v0)), x[-1:], rtol=1e-8)
        assert out.dtype == jnp.float64


def test_heavy_ball_matches_the_damped_oscillator_with_fixed_damping():
    # h'' + gamma h' = -h with gamma = 0.2 is the same oscillator.
    with jax.enable_x64(True):
        model = HeavyBallODE(
            1, _force, damping=2 * ZETA * OMEGA, learn_damping=False, initial="given",
            output="state", **TIGHT,
        )  # fmt: skip
        assert isinstance(model.model, neurde.NeuralODE)
        field = model.model.field
        assert isinstance(field, HeavyBallField)
        np.testing.assert_allclose(field.damping, 0.2, rtol=1e-12)
        out = model((jnp.array([0.7]), jnp.array([-0.3])), TS)
        x, v = _oscillator(0.7, -0.3, np.asarray(TS))
        np.testing.assert_allclose(out[:, 0], x, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(out[:, 1], v, rtol=1e-8, atol=1e-10)
        zero = HeavyBallODE(1, _force, damping=0.2, **TIGHT)  # m0 = 0 by default
        np.testing.assert_allclose(
            zero(jnp.array([0.7])), _oscillator(0.7, 0.0, 2.0)[0:1], rtol=1e-8
        )


def test_fields_are_the_first_order_systems():
    y = jnp.array([0.5, -1.0, 2.0, 0.25])  # d = 2: x = (0.5, -1), v = (2, 0.25)
    field = SecondOrderField(lambda t, z, a: z[:2] * z[2:], 2)
    np.testing.assert_allclose(field(0.0, y, None), [2.0, 0.25, 1.0, -0.25])
    heavy = HeavyBallField(lambda t, h, a: 3 * h, 2, damping=0.5)
    np.testing.assert_allclose(heavy(0.0, y, None), [2.0, 0.25, 1.5 - 1.0, -3.0 - 0.125])


def test_initial_velocities():
    x0 = jnp.array([0.4])
    learned = SecondOrderODE(1, _acceleration, initial="learned", output="state", width_size=4,
                             depth=1, key=jr.key(0), t1=1.0)  # fmt: skip
    assert learned.initial is not None
    v0 = learned.initial(x0)
    np.testing.assert_allclose(learned.lift(x0), jnp.concatenate([x0, v0]), rtol=1e-6)
    given = SecondOrderODE(1, _acceleration, initial="given", output="state", t1=1.0)
    np.testing.assert_allclose(learned(x0), given((x0, v0)), rtol=1e-5, atol=1e-6)
    custom = SecondOrderODE(1, _acceleration, initial=lambda x: 2 * x, t1=1.0)
    np.testing.assert_allclose(custom.lift(x0), [0.4, 0.8])
    zero = SecondOrderODE(1, _acceleration, initial="zero", t1=1.0)
    np.testing.assert_allclose(zero.lift(x0), [0.4, 0.0])


def test_gradients_match_central_differences():
    with jax.enable_x64(True):
        model = SecondOrderODE(2, width_size=5, depth=1, key=jr.key(1), **TIGHT)
        x0 = jnp.array([0.3, -0.5])

        @jax.jit
        def loss(x):
            return jnp.sum(model(x, TS) ** 2)

        np.testing.assert_allclose(
            jax.grad(loss)(x0), central_differences(loss, x0), rtol=1e-6, atol=1e-9
        )
        heavy = HeavyBallODE(1, width_size=5, depth=1, initial="learned", key=jr.key(2), **TIGHT)

        @jax.jit
        def by_logit(logit):
            m = eqx.tree_at(lambda m: m.model.field.damping_logit, heavy, logit[0])
            return jnp.sum(m(jnp.array([0.6]), TS) ** 2)

        logit = jnp.array([0.3])
        np.testing.assert_allclose(
            jax.grad(by_logit)(logit), central_differences(by_logit, logit), rtol=1e-6
        )
        fixed = HeavyBallODE(1, width_size=5, depth=1, learn_damping=False, key=jr.key(2), **TIGHT)
        grads = eqx.filter_grad(lambda m: jnp.sum(m(jnp.array([0.6]))))(fixed)
        assert float(grads.model.field.damping_logit) == 0.0


def test_vmap_matches_a_loop():
    model = SecondOrderODE(2, width_size=8, depth=1, key=jr.key(3), t1=1.0)
    xs = jr.normal(jr.key(4), (3, 2))
    np.testing.assert_allclose(
        jax.vmap(model)(xs), jnp.stack([model(x) for x in xs]), rtol=1e-5, atol=1e-6
    )
    heavy = HeavyBallODE(2, width_size=8, depth=1, initial="given", key=jr.key(3), t1=1.0)
    vs = jr.normal(jr.key(5), (3, 2))
    batched = jax.vmap(lambda x, v: heavy((x, v)))(xs, vs)
    np.testing.assert_allclose(batched[1], heavy((xs[1], vs[1])), rtol=1e-5, atol=1e-6)


def _loss(model, batch, key):
    ts, xs = batch
    return jnp.mean((model(xs[0], ts) - xs) ** 2)


@pytest.mark.parametrize("cls", [SecondOrderODE, HeavyBallODE])
def test_fit_decreases_the_loss(cls):
    ts = jnp.linspace(0.0, 3.0, 13)
    xs = jnp.cos(ts)[:, None]
    model = cls(1, width_size=8, depth=1, key=jr.key(6))
    result = neurde.fit(
        model, _loss, (ts, xs), steps=15, key=jr.key(7), optim=optax.adam(1e-2), progress=False
    )
    losses = np.asarray(result.history.loss)
    assert losses[-1] < 0.8 * losses[0]


def test_ensemble_and_checkpoint_round_trip(tmp_path):
    def make(key):
        return HeavyBallODE(1, width_size=4, depth=1, initial="learned", key=key, t1=1.0)

    ensemble = neurde.make_ensemble(make, 3, key=jr.key(8))
    x0 = jnp.array([0.5])
    out = eqx.filter_vmap(lambda m: m(x0))(ensemble)
    for i in range(3):
        np.testing.assert_allclose(out[i], neurde.ensemble_member(ensemble, i)(x0), rtol=1e-5)
    assert not np.allclose(out[0], out[1])
    model = neurde.ensemble_member(ensemble, 1)
    neurde.save(tmp_path / "hb.eqx", model)
    loaded = neurde.load(tmp_path / "hb.eqx", make(jr.key(99)))
    np.testing.assert_array_equal(loaded(x0), model(x0))
    sonode = SecondOrderODE(1, width_size=4, depth=1, key=jr.key(9), t1=1.0)
    neurde.save(tmp_path / "so.eqx", sonode)
    loaded = neurde.load(
        tmp_path / "so.eqx", SecondOrderODE(1, width_size=4, depth=1, key=jr.key(0), t1=1.0)
    )
    np.testing.assert_array_equal(loaded(x0), sonode(x0))


def test_noise_acts_on_the_phase_space_ode():
    model = SecondOrderODE(
        1, width_size=8, depth=1, key=jr.key(10), t1=1.0, solver=neurde.RK4(), dt0=0.1
    )
    noisy = noise.additive(model, 0.1, dt0=0.1)
    assert isinstance(noisy, SecondOrderODE)
    key, x0 = jr.key(11), jnp.array([0.3])
    by_hand = eqx.tree_at(lambda m: m.model, model, noise.additive(model.model, 0.1, dt0=0.1))
    np.testing.assert_array_equal(noisy(x0, key=key), by_hand(x0, key=key))
    assert not np.allclose(noisy(x0, key=key), model(x0), atol=1e-4)
    np.testing.assert_allclose(eqx.nn.inference_mode(noisy)(x0), model(x0), rtol=1e-4, atol=1e-5)
    penalized = noise.rnode(
        HeavyBallODE(1, width_size=4, depth=1, key=jr.key(0), t1=1.0), estimator="exact"
    )
    assert set(penalized.solve(x0).extras) == {"kinetic", "jacobian"}


@pytest.mark.parametrize("cls", [SecondOrderODE, HeavyBallODE])
def test_input_errors(cls):
    owner = cls.__name__
    given = cls(2, width_size=4, depth=1, initial="given", key=jr.key(0), t1=1.0)
    with pytest.raises(
        ValueError,
        match=rf"{owner}: with `initial='given'` the input is a pair \(x0, v0\)",
    ):
        given(jnp.ones(2))
    with pytest.raises(
        ValueError,
        match=rf"{owner}: `v0` must have shape \(2,\) \(size\), got \(3,\)",
    ):
        given((jnp.ones(2), jnp.ones(3)))
    with pytest.raises(
        ValueError,
        match=rf"{owner}: `x0` must have shape \(2,\) \(size\), got \(5, 2\)",
    ):
        given((jnp.ones((5, 2)), jnp.ones(2)))
    with pytest.raises(TypeError, match=rf"{owner}: `x0` has dtype int32"):
        cls(2, width_size=4, depth=1, initial="zero", key=jr.key(0), t1=1.0)(jnp.array([1, 2]))
    bad = cls(2, width_size=4, depth=1, initial=lambda x: jnp.ones(3), key=jr.key(0), t1=1.0)
    with pytest.raises(
        ValueError,
        match=rf"{owner}: the initial-velocity network returned shape \(3,\), but "
        rf"\(2,\)",
    ):
        bad(jnp.ones(2))


@pytest.mark.parametrize("cls", [SecondOrderODE, HeavyBallODE])
def test_construction_errors(cls):
    owner = cls.__name__
    for size in (0, -1, 1.5):
        with pytest.raises(
            ValueError,
            match=rf"{owner}: `size` must be a positive int, got {size!r}",
        ):
            cls(size, key=jr.key(0))
    with pytest.raises(
        ValueError,
        match=rf"{owner}: `initial` must be 'given', 'zero', 'learned'",
    ):
        cls(1, key=jr.key(0), initial="random")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=rf"{owner}: `output` must be 'position' or 'state'"):
        cls(1, key=jr.key(0), output="velocity")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=rf"{owner}: a `key` is needed to initialize"):
        cls(1)
    wrong = neurde.MLPField(3, 4, key=jr.key(0))
    with pytest.raises(
        ValueError,
        match=rf"{owner}: the (acceleration|force) field takes states of size 3",
    ):
        cls(1, wrong)
    inner = neurde.NeuralODE(neurde.MLPField(2, 4, key=jr.key(0)), t1=1.0)
    with pytest.raises(ValueError, match=rf"{owner}: the solver settings \['t1'\] were given"):
        cls(1, inner, initial="zero", t1=2.0)
    assert cls(1, inner, initial="zero").model is inner


def test_damping_errors():
    for damping in (0.0, 1.0, -0.5, "high"):
        with pytest.raises(
            ValueError,
            match=rf"HeavyBallField: `damping` must be a number in \(0, 1\).*got "
            rf"{damping!r}",
        ):
            HeavyBallODE(1, damping=damping, key=jr.key(0))  # pyright: ignore[reportArgumentType]


@pytest.mark.expensive
def test_acceptance_oscillator_extrapolation():
    from neurde.experiments.zoo_augmented import train_oscillator

    numbers, _ = train_oscillator(size="quick", seed=0)
    assert (
        numbers["second_order_extrapolation_mse"] * 10 <= numbers["first_order_extrapolation_mse"]
    )
    assert numbers["heavy_ball_extrapolation_mse"] < numbers["first_order_extrapolation_mse"]
