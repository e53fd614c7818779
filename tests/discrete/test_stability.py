"""Stable architectures keep forward propagation bounded where a plain ResNet blows up."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

import neurde
from neurde import discrete

DEPTH, WIDTH, H = 1000, 16, 0.1


def _norms(stack, x):
    return float(jnp.linalg.norm(eqx.filter_jit(stack)(x)))


def test_antisymmetric_and_hamiltonian_stay_bounded_where_resnet_blows_up():
    # One random W (std 1/sqrt(width)) everywhere. A plain linear ResNet y + h W y grows like
    # |1 + h mu|^depth for the eigenvalue mu of W with largest real part (about 1): e^100 at
    # depth 1000, past float32's range. The antisymmetric field tanh((W - W^T - gamma I) y)
    # with gamma = h rho(W - W^T)^2 / 2 (Haber & Ruthotto's condition for a stable Euler
    # step) and the Hamiltonian net (Verlet steps, K = W's top-left block) stay bounded:
    # ||y_1000|| <= 2 ||y_0||.
    key = jr.key(0)
    weight = jr.normal(key, (WIDTH, WIDTH)) / jnp.sqrt(WIDTH)
    x = jr.normal(jr.key(1), (WIDTH,))
    x0 = float(jnp.linalg.norm(x))

    resnet = discrete.ResidualStack(
        lambda k: neurde.LinearField(weight), discrete.Euler(), DEPTH, h=H, key=key
    )
    rho = float(jnp.max(jnp.abs(jnp.linalg.eigvals(weight - weight.T))))
    anti_field = discrete.AntisymmetricField(WIDTH, gamma=H * rho**2 / 2, key=key)
    anti_field = eqx.tree_at(lambda f: f.weight, anti_field, weight)
    antisymmetric = discrete.ResidualStack(
        lambda k: anti_field, discrete.Euler(), DEPTH, h=H, key=key
    )

    def ham_block(k):
        block = discrete.HamiltonianBlock(WIDTH // 2, key=k)
        return eqx.tree_at(lambda b: b.kernel, block, weight[: WIDTH // 2, : WIDTH // 2])

    hamiltonian = discrete.ResidualStack(
        ham_block, discrete.AdditiveCoupling(), DEPTH, h=H, key=key
    )

    blown_up = _norms(resnet, x)
    assert not blown_up < 1e6 * x0  # overflows to inf/NaN in float32
    assert _norms(antisymmetric, x) <= 2 * x0
    assert _norms(hamiltonian, x) <= 2 * x0
