"""Reversible schemes: exact inverses, and memory-saving backprop equals ordinary autodiff."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde
from neurde import discrete


def _mlp(size):
    return lambda k: neurde.MLPField(size, 16, 1, activation=jnp.tanh, key=k)


CASES = {
    "revnet": (
        lambda k: discrete.CouplingBlock(_mlp(4)(jr.fold_in(k, 0)), _mlp(4)(jr.fold_in(k, 1))),
        discrete.AdditiveCoupling,
    ),
    "hamiltonian": (lambda k: discrete.HamiltonianBlock(4, key=k), discrete.AdditiveCoupling),
    "leapfrog": (_mlp(8), discrete.Leapfrog),
    "momentum": (_mlp(8), lambda: discrete.Momentum(0.9)),
}


def _max_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("name", sorted(CASES))
# float32: round-off over 32 blocks of states of size ~4 (1.3e-5 seen for leapfrog with jax
# 0.8, 4e-6 with 0.10: XLA versions fuse differently); float64 is the exactness check.
@pytest.mark.parametrize(("x64", "tol"), [(False, 3e-5), (True, 1e-10)])
def test_inverse_of_forward_is_identity(name, x64, tol):
    make_block, make_scheme = CASES[name]
    with jax.enable_x64(x64):
        x = jr.normal(jr.key(1), (8,))
        stack = discrete.ResidualStack(make_block, make_scheme(), 32, h=0.25, key=jr.key(0))
        state = eqx.filter_jit(stack.forward_state)(x)
        assert _max_diff(eqx.filter_jit(stack.inverse)(state), stack.scheme.init(x)) < tol


@pytest.mark.parametrize("name", sorted(CASES))
def test_memory_saving_gradients_equal_autodiff(name):
    make_block, make_scheme = CASES[name]
    with jax.enable_x64(True):
        x = jr.normal(jr.key(1), (8,))
        saving = discrete.ResidualStack(
            make_block, make_scheme(), 16, h=0.3, memory_saving=True, key=jr.key(0)
        )
        plain = discrete.ResidualStack(
            make_block, make_scheme(), 16, h=0.3, memory_saving=False, key=jr.key(0)
        )
        assert saving.memory_saving and not plain.memory_saving

        def loss(stack, x):
            return jnp.sum(jnp.sin(stack(x)) ** 2)

        grad = eqx.filter_jit(eqx.filter_grad(loss))
        g_saving, g_plain = grad(saving, x), grad(plain, x)
        assert _max_diff(g_saving, g_plain) < 1e-10
        np.testing.assert_allclose(
            jax.grad(lambda x: loss(saving, x))(x),
            jax.grad(lambda x: loss(plain, x))(x),
            atol=1e-12,
        )


def _temp_bytes(loss, stack, xs):
    compiled = eqx.filter_jit(eqx.filter_grad(loss)).lower(stack, xs).compile()
    return compiled.compiled.memory_analysis().temp_size_in_bytes


def test_memory_saving_under_vmap_is_flat_in_depth_and_exact():
    # A batch of 32 through `jax.vmap`: gradients equal plain autodiff (float64, 1e-12), and
    # XLA's temporary bytes of the gradient step do not grow from depth 8 to depth 64, while
    # stored activations grow (at least 4x). Byte counts come from XLA's buffer assignment,
    # not from timing.
    make_block, make_scheme = CASES["revnet"]
    with jax.enable_x64(True):
        xs = jr.normal(jr.key(1), (32, 8))

        def loss(stack, xs):
            return jnp.sum(jnp.sin(jax.vmap(stack)(xs)) ** 2)

        def stack(depth, saving):
            return discrete.ResidualStack(
                make_block, make_scheme(), depth, h=0.2, memory_saving=saving, key=jr.key(0)
            )

        grad = eqx.filter_jit(eqx.filter_grad(loss))
        assert _max_diff(grad(stack(16, True), xs), grad(stack(16, False), xs)) < 1e-12
        saving = [_temp_bytes(loss, stack(d, True), xs) for d in (8, 64)]
        stored = [_temp_bytes(loss, stack(d, False), xs) for d in (8, 64)]
        assert saving[1] <= 1.1 * saving[0], saving
        assert stored[1] >= 4 * stored[0], stored


def test_per_example_gradients_under_memory_saving_are_the_documented_batch_sum():
    # `vmap(grad(...))` with shared parameters: the memory-saving walk's batching rule sums
    # the parameter gradient over the batch (documented on `memory_saving`), while input
    # gradients stay per example; memory_saving=False gives each example its own.
    make_block, make_scheme = CASES["revnet"]
    xs = jr.normal(jr.key(1), (3, 8))

    def loss(stack, x):
        return jnp.sum(stack(x) ** 2)

    per_example = eqx.filter_jit(eqx.filter_vmap(eqx.filter_grad(loss), in_axes=(None, 0)))
    one = eqx.filter_jit(eqx.filter_grad(loss))
    input_grad = eqx.filter_jit(jax.grad(lambda x, stack: loss(stack, x)))
    input_grads = eqx.filter_vmap(input_grad, in_axes=(0, None))
    for saving in (True, False):
        stack = discrete.ResidualStack(
            make_block, make_scheme(), 4, memory_saving=saving, key=jr.key(0)
        )
        got = per_example(stack, xs)
        alone = [one(stack, x) for x in xs]
        want = [alone[i] for i in range(3)]
        if saving:
            total = jax.tree.map(lambda *g: sum(g), *alone)
            want = [total] * 3
        for i in range(3):
            got_i = jax.tree.map(lambda g, i=i: g[i], eqx.filter(got, eqx.is_array))
            assert _max_diff(got_i, eqx.filter(want[i], eqx.is_array)) < 1e-5
        np.testing.assert_allclose(
            input_grads(xs, stack),
            jnp.stack([input_grad(x, stack) for x in xs]),
            rtol=1e-5,
            atol=1e-6,
        )
