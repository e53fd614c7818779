"""What PolyNet's block converges to as depth grows: f + f(t, 0), or f for the Picard form.

Field: f(t, y) = A y + b with b != 0 (so f(t, 0) = b), on [0, 1], float64. The exact flow
of dy/dt = A y + c is e^A y0 + A^{-1}(e^A - I) c. Errors at depths 16..128; the fitted
log-log slope against 1/depth must be within 0.15 of 1.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
from conftest import fitted_order

import neurde
from neurde import discrete

A = np.array([[-0.5, 1.0], [-1.0, -0.5]])
B = np.array([0.7, -0.4])
Y0 = np.array([1.0, 0.5])
DEPTHS = [16, 32, 64, 128]


def affine(t, y, args):
    return jnp.asarray(A) @ y + jnp.asarray(B)


def flow(c):
    """y(1) of dy/dt = A y + c from Y0."""
    expm = scipy.linalg.expm(A)
    return expm @ Y0 + np.linalg.solve(A, (expm - np.eye(2)) @ c)


def errors(scheme, field, exact):
    out = []
    for depth in DEPTHS:
        stack = discrete.ResidualStack(lambda k: field, scheme, depth, key=jr.key(0))
        out.append(float(jnp.linalg.norm(stack(jnp.asarray(Y0)) - exact)))
    return np.asarray(out)


def test_paper_block_converges_to_field_plus_its_value_at_zero():
    with jax.enable_x64(True):
        field = neurde.FunctionField(affine)
        to_shifted = errors(discrete.PolyNet(), field, flow(2 * B))
        to_field = errors(discrete.PolyNet(), field, flow(B))
    hs = [1 / d for d in DEPTHS]
    assert abs(fitted_order(hs, to_shifted) - 1) < 0.15, to_shifted
    # Not to dy/dt = f: the error stays at the distance between the two flows.
    gap = np.linalg.norm(flow(2 * B) - flow(B))
    np.testing.assert_allclose(to_field[-1], gap, rtol=0.02)
    assert to_field.min() > 0.9 * gap > 0.5


def test_picard_form_converges_to_the_field():
    with jax.enable_x64(True):
        field = neurde.FunctionField(affine)
        errs = errors(discrete.PolyNet(picard=True), field, flow(B))
    assert abs(fitted_order([1 / d for d in DEPTHS], errs) - 1) < 0.15, errs
    assert errs[-1] < 5e-3


def test_nonlinear_limits():
    # f(y) = tanh(W y + c): the paper's block tracks dy/dt = f(y) + f(0), the Picard form
    # dy/dt = f(y); references from deep RK4 stacks of those fields.
    w = np.array([[0.3, -1.2], [1.1, 0.2]])
    c = np.array([0.5, -0.3])

    def f(t, y, args):
        return jnp.tanh(jnp.asarray(w) @ y + jnp.asarray(c))

    def shifted(t, y, args):
        return f(t, y, args) + f(t, jnp.zeros_like(y), args)

    with jax.enable_x64(True):
        rk4 = discrete.RungeKutta.rk4()

        def reference(g):
            deep = discrete.ResidualStack(
                lambda k: neurde.FunctionField(g), rk4, 512, key=jr.key(0)
            )
            return deep(jnp.asarray(Y0))

        field = neurde.FunctionField(f)
        paper = errors(discrete.PolyNet(), field, reference(shifted))
        picard = errors(discrete.PolyNet(picard=True), field, reference(f))
        paper_vs_f = errors(discrete.PolyNet(), field, reference(f))
    hs = [1 / d for d in DEPTHS]
    assert abs(fitted_order(hs, paper) - 1) < 0.15, paper
    assert abs(fitted_order(hs, picard) - 1) < 0.15, picard
    assert paper_vs_f[-1] > 50 * paper[-1]


def test_forms_agree_on_linear_fields():
    # With f(t, y) = A y both forms are (I + hA + h^2 A^2) per block.
    depth = 5
    with jax.enable_x64(True):
        field = neurde.LinearField(A)
        y0 = jnp.asarray(Y0)
        h = 1 / depth
        block = np.eye(2) + h * A + h**2 * A @ A
        exact = np.linalg.matrix_power(block, depth) @ Y0
        for picard in (False, True):
            stack = discrete.ResidualStack(
                lambda k: field, discrete.PolyNet(picard=picard), depth, key=jr.key(0)
            )
            np.testing.assert_allclose(stack(y0), exact, rtol=1e-13)


def test_picard_must_be_a_bool():
    with pytest.raises(TypeError, match=r"PolyNet: `picard` must be True or False, got 'yes'"):
        discrete.PolyNet(picard="yes")  # pyright: ignore[reportArgumentType]
