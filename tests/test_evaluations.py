"""`neurde.count_evaluations`: forward and backward counts of the drift, checked against what
each gradient method does per step, against `stats["nfe"]`, and under `vmap` and batch mode."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde

N, B = 10, 3  # steps of the constant-step solves; batch size


def _ode(adjoint="backprop", **kwargs):
    field = neurde.MLPField(2, 8, 1, key=jr.key(0))
    options = {"solver": neurde.RK4(), "t1": 1.0, "dt0": 1.0 / N} | kwargs
    return neurde.NeuralODE(field, adjoint=adjoint, **options)


Y0 = jnp.array([0.5, -0.3])
YS = jr.normal(jr.key(1), (B, 2))


def _loss(model):
    return jnp.sum(model(Y0) ** 2)


@pytest.mark.parametrize(
    ("adjoint", "forward", "vjp"),
    [
        # Backprop with one checkpoint a step: the step is recomputed, then differentiated.
        ("backprop", 2 * 4 * N, 4 * N),
        # The continuous adjoint: every RK4 stage of the backward solve evaluates f at the
        # reconstructed state and takes its VJP.
        ("adjoint", 2 * 4 * N, 4 * N),
        # Reversible RK4: two base steps a step forward, two to rebuild and differentiate.
        ("reversible", 2 * 2 * 4 * N, 2 * 4 * N),
    ],
)
def test_counts_per_gradient_method(adjoint, forward, vjp):
    model = _ode(adjoint)
    _, counts = neurde.count_evaluations(eqx.filter_grad(_loss))(model)
    assert counts == {"forward": forward, "vjp": vjp, "solves": 1}


def test_adaptive_forward_count_equals_stats_and_gradient_is_unchanged():
    with jax.enable_x64(True):
        model = _ode(solver=diffrax.Tsit5(), dt0=None, rtol=1e-8, atol=1e-8)
        y0 = Y0.astype(jnp.float64)
        # The forward count is what `stats["nfe"]` reports, the initial step-size
        # selection and the FSAL restart included.
        stats, counts = neurde.count_evaluations(lambda m: m.solve(y0).stats)(model)
        assert counts == {"forward": int(stats["nfe"]), "vjp": 0, "solves": 1}
        assert int(stats["num_steps"]) >= 4

        def loss(m):
            return jnp.sum(m(y0) ** 2)

        grads, counts = neurde.count_evaluations(eqx.filter_grad(loss))(model)
        assert counts["vjp"] > 0 and counts["forward"] > int(stats["nfe"])
        want = eqx.filter_grad(loss)(model)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("adjoint", ["backprop", "adjoint"])
def test_vmap_counts_every_example_and_batch_mode_shares_one_count(adjoint):
    model = _ode(adjoint)

    def vmapped(m):
        return jnp.sum(jax.vmap(m)(YS) ** 2)

    def batch_mode(m):
        return jnp.sum(neurde.batched(m)(YS) ** 2)

    # Under vmap each example's evaluation counts: B times the one-example counts. Batch
    # mode evaluates the batched field once a stage: the one-example counts, shared.
    _, per_example = neurde.count_evaluations(eqx.filter_grad(vmapped))(model)
    assert per_example == {"forward": B * 8 * N, "vjp": B * 4 * N, "solves": 1}
    _, shared = neurde.count_evaluations(eqx.filter_grad(batch_mode))(model)
    assert shared == {"forward": 8 * N, "vjp": 4 * N, "solves": 1}


def test_sde_scan_path_counts_the_recomputed_steps():
    # Euler–Maruyama on a grid path runs as a checkpointed `lax.scan`: one evaluation a
    # step forward, one recomputed and one VJP backward (RNODE's extras ride along).
    sde = neurde.NeuralSDE(
        _ode().field, lambda t, y, a: 0.1 * jnp.ones_like(y), t1=1.0, dt0=1.0 / N
    )
    for model in (sde, neurde.noise.rnode(sde, estimator="exact")):

        def loss(m):
            return jnp.sum(m.solve(Y0, key=jr.key(0)).ys ** 2)

        _, counts = neurde.count_evaluations(eqx.filter_grad(loss))(model)
        assert counts == {"forward": 2 * N, "vjp": N, "solves": 1}


def test_a_program_compiled_with_counting_counts_again():
    step = eqx.filter_jit(eqx.filter_grad(_loss))
    model = _ode()
    first = neurde.count_evaluations(step)(model)[1]
    second = neurde.count_evaluations(step)(model)[1]  # the cached program, already counting
    assert first["forward"] == second["forward"] == 8 * N
    assert second["solves"] == 0


def test_errors_name_the_fix():
    with pytest.raises(TypeError, match=r"`fn` must be callable .*got an object of type int"):
        neurde.count_evaluations(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"traced no neurde solve.*jax.clear_caches\(\)"):
        neurde.count_evaluations(lambda x: x + 1)(1.0)
    # A program compiled before the count has no counter in it.
    step = eqx.filter_jit(_loss)
    model = _ode()
    step(model)
    with pytest.raises(ValueError, match=r"reused a program compiled before the count"):
        neurde.count_evaluations(step)(model)
    implicit = _ode(solver=diffrax.Kvaerno3(), dt0=None, rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match=r"implicit solver Kvaerno3.*explicit solver"):
        neurde.count_evaluations(_loss)(implicit)
