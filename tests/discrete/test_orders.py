"""Every scheme converges to the exact flow with its order as depth grows (shared field)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
from conftest import fitted_order

import neurde
from neurde import discrete

A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
DEPTHS = [16, 32, 64, 128]


def _errors(make_scheme, field, y0, exact):
    errors = []
    for depth in DEPTHS:
        stack = discrete.ResidualStack(lambda k: field, make_scheme(depth), depth, key=jr.key(0))
        errors.append(float(jnp.linalg.norm(stack(y0) - exact)))
    return errors


@pytest.mark.parametrize(
    ("name", "make_scheme", "order"),
    [
        ("euler", lambda n: discrete.Euler(), 1),
        ("polynet", lambda n: discrete.PolyNet(), 1),
        ("rk2", lambda n: discrete.RungeKutta.rk2(), 2),
        ("heun", lambda n: discrete.RungeKutta.heun(), 2),
        ("rk4", lambda n: discrete.RungeKutta.rk4(), 4),
        ("lm-resnet k=1", lambda n: discrete.LinearMultistep(n, 1.0), 2),
        ("lm-resnet k=0.3", lambda n: discrete.LinearMultistep(n, 0.3), 1),
        ("midpoint", discrete.LinearMultistep.midpoint, 2),
    ],
)
def test_first_order_schemes_converge_with_their_order(name, make_scheme, order):
    # dy/dt = A y on [0, 1]; the fitted log-log slope of the error at t = 1 over depths
    # 16..128 must be within 0.15 of the order.
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, 0.5])
        exact = scipy.linalg.expm(A) @ np.asarray(y0)
        errors = _errors(make_scheme, neurde.LinearField(A), y0, exact)
        slope = fitted_order([1 / d for d in DEPTHS], errors)
        assert abs(slope - order) < 0.15, (name, slope, errors)


def test_nonlinear_field_rk4_order():
    # A smooth nonlinear field (pendulum); reference from a much deeper RK4 stack.
    def pendulum(t, y, args):
        return jnp.stack([y[1], -jnp.sin(y[0])])

    field = neurde.FunctionField(pendulum)
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, 0.0])
        deep = discrete.ResidualStack(
            lambda k: field, discrete.RungeKutta.rk4(), 2048, key=jr.key(0)
        )
        errors = _errors(lambda n: discrete.RungeKutta.rk4(), field, y0, deep(y0))
        assert abs(fitted_order([1 / d for d in DEPTHS], errors) - 4) < 0.2


def test_leapfrog_is_second_order_on_second_order_ode():
    # Y'' = -w^2 Y from rest: Y(1) = cos(w).
    w = 2.0
    field = neurde.LinearField(-(w**2) * np.eye(1))
    with jax.enable_x64(True):
        errors = _errors(lambda n: discrete.Leapfrog(), field, jnp.array([1.0]), np.cos(w))
        assert abs(fitted_order([1 / d for d in DEPTHS], errors) - 2) < 0.15


def test_step_size_h_sets_the_time_horizon():
    # Four blocks of h = 0.5 integrate to t = 2.
    with jax.enable_x64(True):
        field = neurde.LinearField(-np.eye(1))
        stack = discrete.ResidualStack(
            lambda k: field, discrete.RungeKutta.rk4(), 64, h=2 / 64, key=jr.key(0)
        )
        np.testing.assert_allclose(stack(jnp.ones(1)), np.exp(-2.0), rtol=1e-7)
