"""Discrete regularizers (dropout in the branch, stochastic depth, Shake-Shake, ShakeDrop) and
noise on ResNets: discrete form vs SDE form for one block, inference mode, gradients."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde
from neurde import discrete, noise

N = 40_000
X0 = jnp.array([0.5, -1.0, 2.0])


def _stack(depth=1, h=0.5, branches=False, seed=0):
    def make(k):
        k1, k2 = jr.split(k)
        field = neurde.MLPField(3, 8, 1, key=k1)
        return noise.Branches(field, neurde.MLPField(3, 8, 1, key=k2)) if branches else field

    return discrete.ResidualStack(make, discrete.Euler(), depth, h=h, key=jr.key(seed))


@eqx.filter_jit
def _outputs(model, key):
    return jax.vmap(lambda k: model(X0, key=k))(jr.split(key, N))


def _branch_values(stack):
    block = jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, stack.blocks)
    if isinstance(block, noise.Branches):
        return [np.asarray(v, np.float64) for v in block.branches(0.0, X0, None)]
    return [np.asarray(block(0.0, X0, None), np.float64)]


def _moments(out):
    out = np.asarray(out, np.float64)
    return out.mean(0), np.cov(out.T)


# For one block x1 = x0 + h * m * f: the multiplier m's mean and covariance (as a matrix on
# the coordinates) given the branch values, from each paper's rule.
def _dropout_moments(fs, p=0.3):
    (f,) = fs
    return f, np.diag(p / (1 - p) * f**2)


def _depth_moments(fs, p=0.6):  # one block: p_1 = 1 - (1/1)(1 - p_L) = p_L = survival_last
    (f,) = fs
    return p * f, p * (1 - p) * np.outer(f, f)


def _shake_moments(fs):
    f1, f2 = fs
    d = f1 - f2
    return (f1 + f2) / 2, np.outer(d, d) / 12


def _shakedrop_moments(fs, p=0.6):
    (f,) = fs
    mean = p  # E[b + a - ba] with a ~ U(-1, 1)
    var = p + (1 - p) / 3 - p**2
    return mean * f, var * np.outer(f, f)


CASES = {
    "dropout": (lambda s, form: noise.residual_dropout(s, 0.3, form=form), False, _dropout_moments),
    "stochastic depth": (
        lambda s, form: noise.stochastic_depth(s, 0.6, form=form), False, _depth_moments,
    ),
    "shake-shake": (lambda s, form: noise.shake_shake(s, form=form), True, _shake_moments),
    "shakedrop": (lambda s, form: noise.shake_drop(s, 0.6, form=form), False, _shakedrop_moments),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_discrete_and_sde_forms_agree_in_mean_and_covariance_for_one_block(name):
    transform, branches, moments = CASES[name]
    h = 0.5
    stack = _stack(h=h, branches=branches)
    branch_mean, branch_cov = moments(_branch_values(stack))
    want_mean = np.asarray(X0) + h * branch_mean
    want_cov = h**2 * branch_cov
    scale = np.max(np.diag(want_cov))
    for form in ("discrete", "sde"):
        mean, cov = _moments(_outputs(transform(stack, form), jr.key(7)))
        se = np.sqrt(np.diag(want_cov) / N)
        np.testing.assert_array_less(np.abs(mean - want_mean), 4.5 * se + 1e-6, err_msg=form)
        # N = 40 000: a variance's standard error is ~0.7% of it (more for Bernoulli tails).
        np.testing.assert_allclose(cov, want_cov, atol=0.05 * scale, err_msg=form)


def test_noise_on_a_resnet_block_is_an_euler_maruyama_step():
    h = 0.25
    stack = _stack(h=h)
    (f,) = _branch_values(stack)
    out = _outputs(noise.multiplicative(noise.additive(stack, 0.3), 0.2), jr.key(3))
    mean, cov = _moments(out)
    g2 = 0.3**2 + (0.2 * np.asarray(X0)) ** 2
    np.testing.assert_array_less(np.abs(mean - (X0 + h * f)), 4 * np.sqrt(h * g2 / N))
    np.testing.assert_allclose(cov, np.diag(h * g2), atol=0.05 * h * g2.max())


@pytest.mark.parametrize("name", list(CASES))
def test_inference_mode_is_the_expected_deterministic_net(name):
    transform, branches, _ = CASES[name]
    stack = _stack(depth=5, h=0.2, branches=branches)
    noisy = noise.additive(transform(stack, "discrete"), 0.5)
    off = eqx.nn.inference_mode(noisy)
    if name in ("dropout", "shake-shake"):
        # E[branch] is the plain branch (the mean of two for Shake-Shake): the plain ResNet.
        np.testing.assert_array_equal(off(X0), stack(X0))
    else:
        # Test-time scaling x + h p_l f_l, with p_l = 1 - l/L (1 - p_L).
        x = X0
        for n in range(5):
            block = jax.tree.map(lambda a, n=n: a[n] if eqx.is_array(a) else a, stack.blocks)
            p = 1 - (n + 1) / 5 * (1 - 0.6)
            x = x + 0.2 * p * block(jnp.asarray(n * 0.2), x, None)
        np.testing.assert_allclose(off(X0), x, rtol=1e-6)
    # Inference needs no key and is deterministic; training mode differs per key.
    assert not np.allclose(noisy(X0, key=jr.key(0)), noisy(X0, key=jr.key(1)))


def test_shake_shake_backward_draw_is_independent_of_the_forward_draw():
    # One block, branches f1 = a constant vector u, f2 = 0 (fields whose value is a parameter):
    # forward value x0 + h * a * u reveals a; d out / d u = h * b reveals the backward draw b.
    u = jnp.array([1.0, 2.0, 3.0])

    class Const(neurde.AbstractField):
        v: jax.Array

        def __call__(self, t, y, args):
            return self.v

    stack = discrete.ResidualStack(
        lambda k: noise.Branches(Const(u), Const(jnp.zeros(3))), discrete.Euler(), 1, h=1.0,
        key=jr.key(0),
    )  # fmt: skip
    model = noise.shake_shake(stack)

    def draws(key):
        def out(m):
            return jnp.sum(m(jnp.zeros(3), key=key))

        value, grad = eqx.filter_value_and_grad(out)(model)
        a = value / jnp.sum(u)
        b = grad.blocks.first.v[0, 0]
        return a, b

    a, b = jax.vmap(draws)(jr.split(jr.key(0), 4000))
    a, b = np.asarray(a), np.asarray(b)
    assert np.all((a >= 0) & (a <= 1)) and np.all((b >= 0) & (b <= 1))
    assert abs(a.mean() - 0.5) < 0.02 and abs(b.mean() - 0.5) < 0.02
    assert np.mean(np.abs(a - b) > 1e-3) > 0.99  # not the same draw
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.06  # independent: |r| < 4 / sqrt(4000)


def test_shakedrop_backward_uses_its_own_range():
    u = jnp.array([1.0, -1.0])

    class Const(neurde.AbstractField):
        v: jax.Array

        def __call__(self, t, y, args):
            return self.v

    stack = discrete.ResidualStack(lambda k: Const(u), discrete.Euler(), 1, h=1.0, key=jr.key(0))
    model = noise.shake_drop(stack, 0.5)

    def draws(key):
        grad = eqx.filter_grad(lambda m: m(jnp.zeros(2), key=key)[0])(model)
        return grad.blocks.v[0, 0]

    b = np.asarray(jax.vmap(draws)(jr.split(jr.key(1), 4000)))
    # Backward multiplier b + c - bc: 1 when the block survives, c ~ U(0, 1) otherwise, so it
    # is never negative although the forward multiplier can be (a ~ U(-1, 1)).
    assert b.min() >= 0 and abs(np.mean(b == 1.0) - 0.5) < 0.04


def test_regularized_classifier_trains_with_keys_and_predicts_in_inference_mode():
    data = neurde.data.digits(image=False)
    clf = discrete.Classifier((64,), 10, architecture="resnet", width=16, depth=4, key=jr.key(0))
    model = noise.stochastic_depth(noise.additive(clf, 0.1), 0.8)

    def loss(m, batch, key):
        x, y = batch
        logits = jax.vmap(lambda xi, k: m(xi, key=k))(x, jr.split(key, len(x)))
        return jnp.mean(
            jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
        )

    result = neurde.fit(
        model, loss, (data.x_train, data.y_train), steps=150, batch_size=64,
        optim=__import__("optax").adam(1e-2), key=jr.key(1), progress=False,
    )  # fmt: skip
    off = eqx.nn.inference_mode(result.model)
    acc = float(jnp.mean(jnp.argmax(jax.vmap(off)(data.x_test), -1) == data.y_test))
    # Width 16, depth 4, 150 Adam steps on flat digits with noise and stochastic depth.
    assert acc > 0.85, acc
