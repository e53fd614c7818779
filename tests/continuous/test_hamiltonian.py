"""Hamiltonian neural networks, their fields and the ideal mass-spring / pendulum data."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from conftest import central_differences

import neurde
from neurde.continuous import (
    HamiltonianField,
    HamiltonianNN,
    SeparableHamiltonianField,
)
from neurde.data import mass_spring, mass_spring_energy, pendulum, pendulum_energy
from neurde.solvers import Leapfrog, SymplecticEuler

KEY = jr.key(0)


def oscillator_h(y):
    return 0.5 * y[0] ** 2 + 0.5 * y[1] ** 2 + 0.1 * y[0] ** 2 * y[1] ** 2


def small_hnn(**kwargs):
    options = dict(separable=True, solver=Leapfrog(), dt0=0.1, t1=1.0, key=KEY)
    return HamiltonianNN(1, 8, 1, **{**options, **kwargs})


# --- fields -----------------------------------------------------------------------------


def test_field_is_symplectic_gradient():
    # H = q^2/2 + p^2/2 + q^2 p^2 / 10: dq/dt = p + q^2 p / 5, dp/dt = -(q + q p^2 / 5)
    field = HamiltonianField(oscillator_h, 1)
    q, p = 0.7, -0.4
    expected = [p + q**2 * p / 5, -(q + q * p**2 / 5)]
    np.testing.assert_allclose(field(0.0, jnp.array([q, p]), None), expected, rtol=1e-6)


def test_dissipative_field_adds_gradient_of_dissipation():
    # D = -gamma p^2 / 2: the damped oscillator dq/dt = p, dp/dt = -q - gamma p
    field = HamiltonianField(
        lambda y: 0.5 * jnp.sum(y**2), 1, dissipation=lambda y: -0.3 * y[1] ** 2 / 2
    )
    np.testing.assert_allclose(field(0.0, jnp.array([0.5, 2.0]), None), [2.0, -0.5 - 0.6])


def test_separable_field_with_mass_and_with_kinetic():
    potential = lambda q: 1 - jnp.cos(q[0])  # noqa: E731
    with_mass = SeparableHamiltonianField(potential, mass=2.0, dim=1)
    y = jnp.array([0.4, 1.5])
    np.testing.assert_allclose(with_mass(0.0, y, None), [0.75, -np.sin(0.4)], rtol=1e-6)
    np.testing.assert_allclose(with_mass.energy(y), 1.5**2 / 4 + 1 - np.cos(0.4), rtol=1e-6)
    learned = SeparableHamiltonianField(potential, lambda p: jnp.sum(p**4) / 4, dim=1)
    np.testing.assert_allclose(learned(0.0, y, None), [1.5**3, -np.sin(0.4)], rtol=1e-6)


def test_multidimensional_field_layout():
    # two positions: y = [q1, q2, p1, p2]
    field = HamiltonianField(lambda y: jnp.sum(y[2:] ** 2) / 2 + y[0] * y[1], 2)
    np.testing.assert_allclose(field(0.0, jnp.array([1.0, 2.0, 3.0, 4.0]), None), [3, 4, -2, -1])


# --- the model --------------------------------------------------------------------------


def test_true_hamiltonian_reproduces_pendulum_data():
    with jax.enable_x64(True):
        data = pendulum(3, 11, t1=5.0, dtype=jnp.float64, key=KEY)
        field = SeparableHamiltonianField(lambda q: 1 - jnp.cos(q[0]), dim=1)
        model = HamiltonianNN(field=field, solver=diffrax.Tsit5(), rtol=1e-10, atol=1e-10)
        ys = jax.vmap(lambda y: model(y, data.ts))(data.y0)
        np.testing.assert_allclose(ys, data.clean, atol=1e-6)


def test_general_hnn_conserves_its_learned_energy():
    with jax.enable_x64(True):
        model = HamiltonianNN(1, 16, 2, rtol=1e-10, atol=1e-10, key=KEY)
        model = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_array(x) else x, model)
        y0 = jnp.array([0.8, -0.3])
        ys = model(y0, jnp.linspace(0.0, 20.0, 50))
        energies = jax.vmap(model.energy)(ys)
        np.testing.assert_allclose(energies, model.energy(y0), rtol=1e-7)
        # and it moves: the energy is conserved by the flow, not by a constant state
        assert float(jnp.linalg.norm(ys[-1] - y0)) > 1e-2


def test_separable_hnn_with_leapfrog_has_bounded_energy_error():
    model = small_hnn(t1=None, max_steps=20_000)
    y0 = jnp.array([0.8, -0.3])
    ys = model(y0, jnp.linspace(0.0, 600.0, 3001))
    errors = np.abs(np.asarray(jax.vmap(model.energy)(ys) - model.energy(y0)))
    assert errors[-300:].max() <= 1.5 * errors[:300].max() + 1e-6
    assert errors.max() < 1e-2


def test_solve_passes_stats_through():
    model = small_hnn()
    solution = model.solve(jnp.array([0.5, 0.5]))
    assert int(solution.stats["num_steps"]) == 10
    assert int(solution.stats["nfe"]) == 21  # leapfrog: 2 per step + 1 at the start


def test_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        model = HamiltonianNN(1, 4, 1, separable=True, solver=Leapfrog(), dt0=0.1, t1=1.0, key=KEY)
        model = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_array(x) else x, model)
        params, static = eqx.partition(model, eqx.is_inexact_array)
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        y0 = jnp.array([0.6, -0.2])

        def loss(theta):
            return jnp.sum(eqx.combine(unravel(theta), static)(y0) ** 2)

        np.testing.assert_allclose(
            jax.grad(loss)(flat), central_differences(loss, flat), rtol=1e-5, atol=1e-8
        )


def test_vmap_equals_loop():
    model = HamiltonianNN(1, 8, 1, t1=1.0, key=KEY)
    y0 = jr.normal(jr.key(1), (4, 2))
    batched = jax.vmap(model)(y0)
    np.testing.assert_allclose(batched, np.stack([model(y) for y in y0]), rtol=1e-5, atol=1e-6)


def test_fit_decreases_loss():
    data = mass_spring(16, 5, t1=1.0, key=KEY)
    model = small_hnn(t1=None)

    def loss(m, batch, key):
        ys = jax.vmap(lambda y: m(y, data.ts[1:]))(batch[:, 0])
        return jnp.mean((ys - batch[:, 1:]) ** 2)

    evaluate = eqx.filter_jit(loss)
    before = float(evaluate(model, data.ys, None))
    trained = neurde.fit(
        model, loss, data.ys, steps=30, key=KEY, optim=optax.adam(1e-2), progress=False
    ).model
    assert float(evaluate(trained, data.ys, None)) < 0.5 * before


def test_ensemble_members_are_models():
    ensemble = neurde.make_ensemble(lambda k: small_hnn(key=k), 3, key=KEY)
    y0 = jnp.array([0.5, 0.1])
    outs = eqx.filter_vmap(lambda m: m(y0))(ensemble)
    for i in range(3):
        np.testing.assert_allclose(outs[i], neurde.ensemble_member(ensemble, i)(y0), rtol=1e-6)
    assert float(jnp.abs(outs[0] - outs[1]).max()) > 1e-4


def test_save_load_round_trip(tmp_path):
    model = HamiltonianNN(1, 8, 1, dissipative=True, t1=1.0, key=KEY)
    neurde.save(tmp_path / "hnn.eqx", model)
    loaded = neurde.load(
        tmp_path / "hnn.eqx", HamiltonianNN(1, 8, 1, dissipative=True, t1=1.0, key=jr.key(5))
    )
    y0 = jnp.array([0.3, 0.9])
    np.testing.assert_array_equal(loaded(y0), model(y0))


def test_additive_noise_acts_on_inner_ode():
    model = small_hnn()
    noisy = neurde.noise.additive(model, 0.1, dt0=0.1)
    assert isinstance(noisy, HamiltonianNN)
    y0 = jnp.array([0.5, 0.1])
    key = jr.key(3)
    # noise on the wrapper == the wrapper around the noisy inner ODE
    inner = eqx.tree_at(lambda m: m.model, model, neurde.noise.additive(model.model, 0.1, dt0=0.1))
    np.testing.assert_allclose(noisy(y0, key=key), inner(y0, key=key), rtol=1e-6)
    assert float(jnp.abs(noisy(y0, key=key) - model(y0)).max()) > 1e-3
    # in inference mode the noise is off: the plain (leapfrog) model
    np.testing.assert_allclose(eqx.nn.inference_mode(noisy)(y0), model(y0), rtol=1e-6)


def test_rnode_penalties_pass_through():
    model = HamiltonianNN(1, 8, 1, t1=1.0, key=KEY)
    solution = neurde.noise.rnode(model, estimator="exact").solve(jnp.array([0.5, 0.1]))
    assert float(solution.extras["kinetic"]) > 0


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", [Leapfrog(), SymplecticEuler()])
def test_symplectic_solver_needs_separable(solver):
    name = type(solver).__name__
    with pytest.raises(ValueError, match=f"HamiltonianNN: {name} is an explicit splitting"):
        HamiltonianNN(1, 8, 1, solver=solver, dt0=0.1, key=KEY)
    with pytest.raises(ValueError, match="Pass `separable=True`"):
        HamiltonianNN(1, 8, 1, dissipative=True, solver=solver, dt0=0.1, key=KEY)


def test_symplectic_solver_swapped_in_later_is_refused_at_solve():
    model = HamiltonianNN(1, 8, 1, dt0=0.1, t1=1.0, key=KEY)
    model = eqx.tree_at(lambda m: m.model.solver, model, Leapfrog())
    model = eqx.tree_at(
        lambda m: m.model.stepsize_controller,
        model,
        diffrax.ConstantStepSize(),
        is_leaf=lambda x: x is None,
    )
    with pytest.raises(ValueError, match="HamiltonianNN: Leapfrog is an explicit splitting"):
        model(jnp.array([0.5, 0.1]))


@pytest.mark.parametrize(
    ("y0", "match"),
    [
        (jnp.ones(3), r"HamiltonianNN: the state must be one vector \[q; p\] of even length"),
        (jnp.ones((2, 2)), r"HamiltonianNN: the state must be one vector"),
        (jnp.ones(4), "HamiltonianNN: the state has length 4 .* Build it with dim=2"),
    ],
)
def test_bad_state(y0, match):
    with pytest.raises(ValueError, match=match):
        small_hnn()(y0)


def test_non_scalar_hamiltonian():
    net = eqx.nn.MLP(2, 1, 4, 1, key=KEY)
    model = HamiltonianNN(field=HamiltonianField(net, 1), t1=1.0)
    with pytest.raises(ValueError, match=r"`hamiltonian` must return a scalar.*got shape \(1,\)"):
        model(jnp.array([0.5, 0.1]))
    field = SeparableHamiltonianField(lambda q: q, dim=1)
    with pytest.raises(ValueError, match="`potential` must return a scalar"):
        field(0.0, jnp.array([0.5, 0.1]), None)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 0}, ValueError, "HamiltonianNN: `dim` is the number of positions"),
        ({"dim": None}, ValueError, "HamiltonianNN: pass the number of positions `dim`"),
        ({"key": None}, ValueError, "building the networks needs `key="),
        ({"mass": 1.0}, ValueError, r"`mass=1.0` sets the kinetic energy.*`separable=True`"),
        ({"dissipative": True, "separable": True}, ValueError, "Pass `separable=False`"),
        ({"field": "H"}, TypeError, "`field` must be a `HamiltonianField`"),
        ({"field": HamiltonianField(oscillator_h, 1), "dim": 2}, ValueError, "Drop `dim`"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    options = {"dim": 1, "key": KEY, **kwargs}
    with pytest.raises(error, match=match):
        HamiltonianNN(options.pop("dim"), 8, 1, **options)


def test_bad_field_arguments():
    with pytest.raises(TypeError, match="HamiltonianField: `hamiltonian` must be callable"):
        HamiltonianField(3.0, 1)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="HamiltonianField: `dim` is the number"):
        HamiltonianField(oscillator_h, 0)
    with pytest.raises(ValueError, match="SeparableHamiltonianField: `mass` must be a number > 0"):
        SeparableHamiltonianField(lambda q: q[0] ** 2, mass=0.0, dim=1)
    with pytest.raises(TypeError, match="SeparableHamiltonianField: `kinetic` must be callable"):
        SeparableHamiltonianField(lambda q: q[0] ** 2, 1.0, dim=1)  # pyright: ignore


# --- data ---------------------------------------------------------------------------------


def test_mass_spring_closed_form_and_energy():
    with jax.enable_x64(True):
        data = mass_spring(5, 21, t1=3.0, mass=2.0, stiffness=0.5, dtype=jnp.float64, key=KEY)
        reference = neurde.NeuralODE(
            lambda t, y, a: jnp.array([y[1] / 2.0, -0.5 * y[0]]), rtol=1e-10, atol=1e-10
        )
        ys = jax.vmap(lambda y: reference(y, data.ts))(data.y0)
        np.testing.assert_allclose(data.clean, ys, atol=1e-8)
        energy = mass_spring_energy(data.clean, mass=2.0, stiffness=0.5)
        np.testing.assert_allclose(energy, energy[:, :1] * np.ones((1, 21)), rtol=1e-12)
        radius = jnp.linalg.norm(data.y0, axis=-1)
        assert bool(jnp.all((radius >= 0.2) & (radius <= 1.0)))


def test_pendulum_conserves_energy_and_noise_level():
    data = pendulum(64, 30, t1=10.0, gravity=2.0, noise=0.1, key=KEY)
    energy = pendulum_energy(data.clean, gravity=2.0)
    np.testing.assert_allclose(energy, energy[:, :1] * np.ones((1, 30)), atol=1e-5)
    assert abs(float(jnp.std(data.ys - data.clean)) - 0.1) < 0.01


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"radius": (1.0, 0.5)}, ValueError, r"need radius\[0\] < radius\[1\]"),
        ({"radius": 1.0}, TypeError, "`radius` must be a pair"),
        ({"mass": -1.0}, ValueError, "`mass` must be > 0"),
        ({"n_times": 1}, ValueError, "`n_times` must be >= 2"),
    ],
)
def test_data_bad_arguments(kwargs, error, match):
    for generate in (mass_spring, pendulum):
        with pytest.raises(error, match=match):
            generate(4, **{"n_times": 5, **kwargs}, key=KEY)


# --- acceptance ---------------------------------------------------------------------------


@pytest.mark.expensive
@pytest.mark.parametrize("system", ["mass_spring", "pendulum"])
def test_hnn_energy_drift_10x_smaller_and_bounded(system):
    from neurde.experiments.zoo_hamiltonian import train_system

    out = train_system(system, size="quick", seed=0)
    hnn, plain = out["HNN"], out["neural ODE"]
    assert plain["drift"] >= 10 * hnn["drift"]
    # bounded: no secular growth for the HNN with leapfrog ...
    assert hnn["last"] <= 1.5 * hnn["first"]
    # ... while the plain neural ODE's energy error grows
    assert plain["last"] >= 2 * plain["first"]
