"""Batch mode (`neurde.batched`): one solve over the batch, against raw Diffrax and vmap.

- Gradients equal those of the same computation written directly with Diffrax on the
  batched state (float64, within 1e-6 relative; measured: identical to rounding): Dopri5
  with backprop, Dopri5 with the continuous adjoint, Euler–Maruyama on the same virtual
  Brownian tree (same key, shape (B, d)).
- With constant steps batch mode is the per-example computation: outputs equal
  `jax.vmap(model)` to 1e-12 (RK4; RNODE's exact penalties; STEER with one key).
- The batch's Brownian increments are independent standard increments across examples
  (correlation and variance within 5 standard errors) and a function of the key.
"""

import functools
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import neurde
from neurde import noise

B, D, T1 = 4, 2, 1.0


def _flat(tree):
    return jax.flatten_util.ravel_pytree(eqx.filter(tree, eqx.is_inexact_array))[0]


@functools.cache
def _field():
    with jax.enable_x64(True):
        return neurde.MLPField(D, 8, 1, key=jr.key(0))


@functools.cache
def _y0():
    with jax.enable_x64(True):
        # Different scales, so per-example solves would take different steps.
        return jr.normal(jr.key(1), (B, D)) * jnp.array([[0.1], [1.0], [3.0], [0.5]])


class _RawVmap(eqx.Module):
    """A one-example field vmapped over the batch (a module, so BacksolveAdjoint sees θ)."""

    f: object

    def __call__(self, t, y, args):
        return jax.vmap(self.f, in_axes=(None, 0, None))(t, y, args)  # type: ignore[arg-type]


class _DiagonalTerm(diffrax.AbstractTerm):
    """g(t, y) * dW for diagonal noise (Diffrax's deprecated WeaklyDiagonalControlTerm)."""

    vector_field: _RawVmap
    control: diffrax.AbstractPath

    def vf(self, t, y, args):
        return self.vector_field(t, y, args)

    def contr(self, t0, t1, **kwargs):
        return self.control.evaluate(t0, t1, **kwargs)

    def prod(self, vf, control):
        return vf * control


def _raw_grad(
    field, y0, solver, controller, adjoint, dt0: Any = None, diffusion=None, key: Any = None
):
    """d/dθ sum(y(1)²) of the batched state, written directly with Diffrax."""

    def loss(f):
        drift = diffrax.ODETerm(_RawVmap(f))
        terms = drift
        if diffusion is not None:
            bm = diffrax.VirtualBrownianTree(0.0, T1, tol=dt0 / 2, shape=y0.shape, key=key)
            g = _DiagonalTerm(_RawVmap(diffusion), bm)
            terms = diffrax.MultiTerm(drift, g)
        sol = diffrax.diffeqsolve(
            terms, solver, 0.0, T1, dt0, y0, stepsize_controller=controller, adjoint=adjoint
        )
        return jnp.sum(jnp.asarray(sol.ys) ** 2)

    return eqx.filter_jit(eqx.filter_grad(loss))(field)


def _batch_grad(model, y0, key=None):
    return eqx.filter_jit(eqx.filter_grad(lambda m: jnp.sum(m(y0, key=key) ** 2)))(model)


def _close(actual, desired, rtol):
    actual, desired = _flat(actual), _flat(desired)
    scale = float(jnp.max(jnp.abs(desired)))
    assert scale > 0
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("adjoint", ["backprop", "adjoint"])
def test_ode_gradient_equals_raw_diffrax(adjoint):
    with jax.enable_x64(True):
        tol = 1e-6
        model = neurde.NeuralODE(
            _field(), solver=diffrax.Dopri5(), rtol=tol, atol=tol, adjoint=adjoint, t1=T1
        )
        batch = neurde.batched(model)
        raw_adjoint = (
            diffrax.BacksolveAdjoint()
            if adjoint == "adjoint"
            else diffrax.RecursiveCheckpointAdjoint()
        )
        controller = diffrax.PIDController(rtol=tol, atol=tol)
        raw = _raw_grad(_field(), _y0(), diffrax.Dopri5(), controller, raw_adjoint)
        _close(_batch_grad(batch, _y0()).model.field, raw, 1e-6)


def _diffusion(t, y, args):
    return 0.3 * jnp.tanh(y) + 0.1


# ~14 s of CPU (two gradients of a solve on a virtual Brownian tree): kept out of CI.
@pytest.mark.expensive
def test_sde_gradient_equals_raw_diffrax_on_the_same_tree():
    with jax.enable_x64(True):
        dt0, key = 0.125, jr.key(2)
        model = neurde.NeuralSDE(_field(), _diffusion, brownian="tree", dt0=dt0, t1=T1)
        batch = neurde.batched(model)
        raw = _raw_grad(
            _field(),
            _y0(),
            diffrax.Euler(),
            diffrax.ConstantStepSize(),
            diffrax.RecursiveCheckpointAdjoint(),
            dt0=dt0,
            diffusion=_diffusion,
            key=key,
        )
        _close(_batch_grad(batch, _y0(), key).model.drift, raw, 1e-6)


def test_constant_steps_equal_vmap_and_stats_are_shared():
    with jax.enable_x64(True):
        constant = diffrax.ConstantStepSize()
        model = neurde.NeuralODE(
            _field(), solver=neurde.RK4(), stepsize_controller=constant, dt0=0.125, t1=T1
        )
        ts = jnp.linspace(0.0, T1, 5)
        solution = neurde.batched(model).solve(_y0(), ts)
        alone = jax.vmap(lambda y: model(y, ts))(_y0())
        assert solution.ys.shape == (B, 5, D)
        np.testing.assert_allclose(solution.ys, alone, rtol=1e-12, atol=1e-12)
        # One shared solve: 8 steps of 4 evaluations of the batched field.
        assert int(solution.stats["num_steps"]) == 8
        assert int(solution.stats["nfe"]) == 32


def test_adaptive_steps_are_shared_by_the_batch():
    # One step-size sequence for the batch: the count of the batch's raw Diffrax solve,
    # while per-example solves differ from one another.
    with jax.enable_x64(True):
        model = neurde.NeuralODE(neurde.LinearField(-jnp.eye(1)), rtol=1e-8, atol=1e-10, t1=T1)
        xs = jnp.array([[1e-6], [1.0], [1e3]])
        batch = int(neurde.batched(model).solve(xs).stats["num_steps"])
        alone = [int(model.solve(x).stats["num_steps"]) for x in xs]
        raw = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, a: -y),
            diffrax.Tsit5(),
            0.0,
            T1,
            None,
            xs,
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-10),
        )
        assert len(set(alone)) > 1
        assert batch == int(raw.stats["num_steps"])


def test_rnode_extras_per_example_and_transforms_go_inside():
    with jax.enable_x64(True):
        constant = diffrax.ConstantStepSize()
        ode = neurde.NeuralODE(
            _field(), solver=neurde.RK4(), stepsize_controller=constant, dt0=0.125, t1=T1
        )
        rnode = noise.rnode(ode, estimator="exact")
        batch = neurde.batched(rnode).solve(_y0())
        alone = jax.vmap(lambda y: rnode.solve(y).extras)(_y0())
        for name in ("kinetic", "jacobian"):
            assert batch.extras[name].shape == (B,)
            np.testing.assert_allclose(batch.extras[name], alone[name], rtol=1e-12)
        # A transform of a batched model is applied to the model inside.
        key = jr.key(3)
        outside = noise.additive(neurde.batched(ode), 0.1)
        inside = neurde.batched(noise.additive(ode, 0.1))
        assert isinstance(outside, neurde.Batched)
        np.testing.assert_array_equal(outside(_y0(), key=key), inside(_y0(), key=key))
        quiet = eqx.nn.inference_mode(outside)
        np.testing.assert_allclose(quiet(_y0()), neurde.batched(ode)(_y0()), rtol=1e-12)


def test_steer_draws_one_end_time_for_the_batch():
    with jax.enable_x64(True):
        constant = diffrax.ConstantStepSize()
        ode = neurde.NeuralODE(
            _field(), solver=neurde.RK4(), stepsize_controller=constant, dt0=0.125, t1=T1
        )
        model, key = noise.steer(ode, 0.5), jr.key(4)
        batch = neurde.batched(model)(_y0(), key=key)
        shared_key = jax.vmap(lambda y: model(y, key=key))(_y0())
        np.testing.assert_allclose(batch, shared_key, rtol=1e-12, atol=1e-12)


def test_per_example_args():
    with jax.enable_x64(True):
        field = neurde.FunctionField(lambda t, y, a: -a * y)
        model = neurde.NeuralODE(field, rtol=1e-10, atol=1e-10, t1=T1)
        rates = jnp.array([0.5, 1.0, 2.0, 3.0])
        out = neurde.batched(model, args_axes=0)(_y0(), args=rates)
        np.testing.assert_allclose(out, _y0() * jnp.exp(-rates)[:, None], rtol=1e-8)
        shared = neurde.batched(model)(_y0(), args=jnp.asarray(2.0))
        np.testing.assert_allclose(shared, _y0() * np.exp(-2.0), rtol=1e-8)


# --- The batch's Brownian motion -------------------------------------------------------


def _brownian_model(brownian):
    zero = neurde.FunctionField(lambda t, y, a: jnp.zeros_like(y))
    one = neurde.FunctionField(lambda t, y, a: jnp.ones_like(y))
    return neurde.batched(neurde.NeuralSDE(zero, one, brownian=brownian, dt0=0.05, t1=T1))


@pytest.mark.parametrize("brownian", ["grid", "tree"])
def test_brownian_increments_independent_across_examples(brownian):
    # dy = dW from y = 0: the saved states are the batch's Brownian path on the step grid.
    with jax.enable_x64(True):
        model, dt, batch = _brownian_model(brownian), 0.05, 256
        ts = jnp.linspace(0.0, T1, 21)
        y0 = jnp.zeros((batch, 3))
        path = jax.jit(lambda k: model(y0, ts, key=k))
        w = path(jr.key(5))
        z = np.asarray(jnp.diff(w, axis=1)) / np.sqrt(dt)  # (batch, 20, 3), i.i.d. N(0, 1)
        n = z.size
        assert abs(np.mean(z**2) - 1.0) < 5 * np.sqrt(2 / n)  # variance dt
        assert abs(np.mean(z)) < 5 / np.sqrt(n)
        # Neighbouring examples (and the mean over all pairs) are uncorrelated.
        neighbours = np.mean(z[1:] * z[:-1])
        assert abs(neighbours) < 5 / np.sqrt(n - z[0].size)
        corr = np.corrcoef(z.reshape(batch, -1))
        off = corr[~np.eye(batch, dtype=bool)]
        assert abs(np.mean(off)) < 5 / np.sqrt(z[0].size * off.size / 2)
        assert np.max(np.abs(off)) < 0.8
        # A function of the key.
        np.testing.assert_array_equal(path(jr.key(5)), w)
        assert float(jnp.max(jnp.abs(path(jr.key(6)) - w))) > 0.1


# --- Training, checkpoints --------------------------------------------------------------


def test_fit_trains_a_batched_model_and_save_load_round_trips(tmp_path):
    # Learn dy/dt = -y on [0, 1] from a batch of 16 trajectories' end points (RK4 with
    # constant steps: the cheapest solve to compile; batch mode's adaptive solves are tested
    # above).
    field = neurde.MLPField(D, 8, 1, key=jr.key(7))
    constant = diffrax.ConstantStepSize()
    ode = neurde.NeuralODE(
        field, solver=neurde.RK4(), stepsize_controller=constant, dt0=0.25, t1=T1
    )
    model = neurde.batched(ode)
    xs = jr.normal(jr.key(8), (16, D))
    data = (xs, xs * np.exp(-1.0))

    def loss(m, batch, key):
        x, y = batch
        return jnp.mean((m(x) - y) ** 2)

    result = neurde.fit(
        model, loss, data, steps=60, key=jr.key(9), optim=optax.adam(2e-2), progress=False
    )
    first, last = float(result.history.loss[0]), float(result.history.loss[-1])
    assert last < 0.3 * first, (first, last)
    neurde.save(tmp_path / "batched.eqx", result.model)
    loaded = neurde.load(tmp_path / "batched.eqx", model)
    np.testing.assert_array_equal(loaded(xs), result.model(xs))


# --- Refusals --------------------------------------------------------------------------


def test_refusals():
    ode = neurde.NeuralODE(neurde.MLPField(D, 4, 1, key=jr.key(0)), t1=T1)
    model = neurde.batched(ode)
    with pytest.raises(ValueError, match=r"batch of initial states.*shape \(B, \.\.\.\)"):
        model(jnp.asarray(1.0))
    with pytest.raises(ValueError, match=r"different batch sizes \[2, 3\]"):
        neurde.batched(neurde.NeuralODE(lambda t, y, a: y, t1=T1))((jnp.ones((2,)), jnp.ones(3)))
    with pytest.raises(ValueError, match=r"one set of save times.*jax.vmap\(model\)"):
        model(jnp.ones((3, D)), jnp.ones((3, 4)))
    per_example = neurde.batched(ode, args_axes=0)
    with pytest.raises(
        ValueError,
        match=r"per example \(`args_axes=0`\), but their shapes \(2,\).*batch size of `y0`, 3",
    ):
        per_example(jnp.ones((3, D)), args=jnp.ones((2,)))
    with pytest.raises(TypeError, match=r"continuous neurde model.*type MLPField.*jax.vmap"):
        neurde.batched(neurde.MLPField(D, 4, 1, key=jr.key(0)))  # type: ignore[arg-type]
    general = neurde.NeuralSDE(
        lambda t, y, a: -y,
        lambda t, y, a: jnp.ones((D, 3)),
        noise="general",
        noise_size=3,
        dt0=0.1,
        t1=T1,
    )
    with pytest.raises(ValueError, match=r"supports diagonal noise.*general noise"):
        neurde.batched(general)(jnp.ones((3, D)), key=jr.key(0))


# --- The vmap trap: a callable that hides the parameters from training -------------------


@functools.cache
def _mlp():
    return eqx.nn.MLP(D, D, 4, 1, key=jr.key(10))


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda m: jax.vmap(m), r"a JAX-transformed MLP \(a plain function\)"),
        (lambda m: jax.jit(m), r"a JAX-transformed MLP"),
        (lambda m: m.__call__, r"a bound method of a MLP"),
    ],
    ids=["jax.vmap", "jax.jit", "bound-method"],
)
def test_trap_transformed_module_is_refused(make, what):
    fix = r"eqx.filter_vmap\(mlp\).*neurde.batched\(model\)"
    with pytest.raises(TypeError, match=rf"`fn` is {what}.*never update them.*{fix}"):
        neurde.FunctionField(make(_mlp()), autonomous=True)
    with pytest.raises(TypeError, match=what):  # every model takes fields through as_field
        neurde.NeuralODE(make(_mlp()))
    # The working forms keep the parameters as leaves of the field, so training sees them.
    for fn in (_mlp(), eqx.filter_vmap(_mlp())):
        field = neurde.FunctionField(fn, autonomous=True)
        assert len(jax.tree.leaves(eqx.filter(field, eqx.is_inexact_array))) == 4


_CONSTANT = jnp.eye(D)
_GLOBAL_NET = [eqx.nn.Linear(D, D, key=jr.key(7))]


def _reads_global(t, y, args):
    return _GLOBAL_NET[0](y)


def _reads_constant(t, y, args):
    return _CONSTANT @ y


def test_trap_closures_over_modules_warn():
    mlp = _mlp()
    module = r"hold a module with floating arrays"
    cases = {
        rf"the function .*<lambda>, whose closure .*{module} \(e.g. one of type MLP\)": (
            lambda t, y, a: mlp(y)
        ),
        rf"the function _reads_global, whose closure or globals {module}": _reads_global,
        rf"a functools.partial whose bound arguments {module}": functools.partial(
            lambda m, t, y, a: m(y), mlp
        ),
    }
    for what, fn in cases.items():
        with pytest.warns(UserWarning, match=rf"`fn` is {what}.*eqx.Partial\(fn, module\)") as rec:
            neurde.FunctionField(fn)
        # The warning points at the line that built the field, not into Equinox.
        assert rec[0].filename == __file__, rec[0].filename
    # Also through a model's constructor (neurde's and Equinox's frames are skipped).
    with pytest.warns(UserWarning, match="eqx.Partial") as rec:
        neurde.NeuralODE(lambda t, y, a: mlp(y))
    assert rec[0].filename == __file__, rec[0].filename
    # No warning for a plain function, constants, or a module holding its parameters.
    import warnings

    matrix = jnp.eye(D)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neurde.FunctionField(lambda t, y, a: -y)
        neurde.FunctionField(lambda t, y, a: matrix @ y)
        neurde.FunctionField(_reads_constant)
        neurde.FunctionField(eqx.Partial(lambda m, t, y, a: m(y), mlp))
