"""The composition matrix: every ordered pair (and some triples) of transforms on every kind
of model either works, with its output equal to a hand-written reference of its documented
meaning, or is refused at construction with a `TypeError` that says why.

Transforms: noise injection (`additive`, `multiplicative`, `dropout_diffusion`), `steer`,
`rnode`, the residual-branch regularizers, `MonteCarlo` and `eqx.nn.inference_mode`. Models:
a `NeuralODE`, a `NeuralSDE`, an Euler `ResidualStack` (of `Branches` blocks, so Shake-Shake
applies), a `discrete.Classifier`, a user module holding a `NeuralODE` (transforms reach it with
`where=`), a `neurde.Composed` around a `NeuralODE` (transforms reach it through the
wrapper), and batch mode (`neurde.batched`) around a `NeuralODE` and a `NeuralSDE`, called on
a batch of three (to keep the matrix's time down, batch mode meets every transform alone, the
continuous transforms in pairs and the triples of continuous transforms).

The documented meanings the references implement:

- the noises that are on join one diagonal diffusion, $g = \\sqrt{\\sum_i g_i^2}$ (one
  noise: $g_1$ itself), in the order applied, after an SDE's own diffusion;
- a continuous model with noise is solved by Euler–Maruyama on the `dt0` grid with a
  `GridBrownianPath` drawn from the call's key (on $[t_0, T + b]$ when STEER is on), and by its
  own solver (RK4 here) when no noise is on;
- in batch mode the batch is one state: the drift and the noises act on each example, the
  Brownian path has the batch's shape, STEER's end time is one for the batch, and RNODE's
  penalties are per example;
- STEER ends the solve at $T' \\sim U(T - b, T + b)$ drawn from `fold_in(key, 1)`;
- RNODE integrates $\\|f\\|^2$ and $\\|\\partial_y f\\|_F^2$ of the drift by the solver's own
  quadrature along the (stochastic) path; zero when off;
- a ResNet block is $x + h B + \\sqrt{h}\\, g \\odot \\xi$ with the branch $B$ drawn by the
  branch regularizer from the block's key (`split(key, depth)`, then `split` into branch
  and noise keys);
- `MonteCarlo` averages over `split(key, n)` with every transform inside switched on;
- `inference_mode` switches off every transform applied before it; later ones stay on.

The composed models run eagerly (`jax.disable_jit`): each composition is a new program,
and compiling hundreds of them would cost more than running them op by op. The references
run with jit on, so their one jitted piece (a Brownian increment) compiles once for all.
"""

import itertools
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde
from neurde import discrete, noise

T, DT, B, DEPTH = 0.3, 0.1, 0.1, 3
SIGMA_ADD, SIGMA_MULT, P_DROP = 0.2, 0.3, 0.2
P_RESIDUAL, SURVIVAL, MC = 0.3, 0.7, 2
CONTINUOUS = ("additive", "multiplicative", "dropout_diffusion", "steer", "rnode")
BRANCH = ("residual_dropout", "stochastic_depth", "shake_shake", "shake_drop")
NOISES = ("additive", "multiplicative", "dropout_diffusion")
TRANSFORMS = (*CONTINUOUS, *BRANCH, "monte_carlo", "inference_mode")
BASES = ("ode", "sde", "stack", "classifier", "user", "composed")
BATCHED = ("batched", "batched_sde")  # batch mode around the ODE and the SDE
TRIPLES = [
    ("additive", "steer", "rnode"),
    ("rnode", "multiplicative", "monte_carlo"),
    ("steer", "inference_mode", "additive"),
    ("dropout_diffusion", "monte_carlo", "steer"),
    ("stochastic_depth", "additive", "monte_carlo"),
    ("shake_shake", "dropout_diffusion", "inference_mode"),
    ("residual_dropout", "inference_mode", "additive"),
    ("multiplicative", "shake_drop", "additive"),
]


class UserNet(eqx.Module):
    """A user's module (not a neurde model) holding a neural ODE."""

    ode: Any
    scale: jax.Array

    def __call__(self, x, *, key=None):
        return self.scale * self.ode(x, key=key)


def _field(key):
    return neurde.MLPField(2, 8, 1, activation=jnp.tanh, time_dependent=True, key=key)


def _g0(t, y, args):
    return 0.1 * (1.0 + y**2)


def _branches(key):
    k1, k2 = jr.split(key)
    return noise.Branches(_field(k1), _field(k2))


def build(base: str) -> Any:
    if base == "ode":
        return neurde.NeuralODE(_field(jr.key(0)), solver=neurde.RK4(), t1=T, dt0=DT)
    if base == "sde":
        return neurde.NeuralSDE(_field(jr.key(0)), _g0, t1=T, dt0=DT, brownian="grid")
    if base == "user":
        return UserNet(build("ode"), jnp.array([2.0, -1.0]))
    if base == "composed":
        return neurde.Composed(jnp.tanh, build("ode"), jnp.sin)
    if base in BATCHED:
        return neurde.batched(build("ode" if base == "batched" else "sde"))
    stack = discrete.ResidualStack(_branches, discrete.Euler(), DEPTH, key=jr.key(1))
    if base == "stack":
        return stack
    clf = discrete.Classifier((4,), 3, width=2, depth=DEPTH, key=jr.key(2))
    return eqx.tree_at(lambda c: c.stack, clf, stack)


def _where(model: Any) -> Any:
    """For the user module: the path to its ODE, through any MonteCarlo around it."""
    if isinstance(model, UserNet):
        return lambda m: m.ode
    inner = _where(model.model)
    return lambda m: inner(m.model)


def transform(name: str, model: Any, base: str) -> Any:
    options = {"where": _where(model)} if base == "user" else {}
    if name == "monte_carlo":
        return noise.MonteCarlo(model, MC)
    if name == "inference_mode":
        return eqx.nn.inference_mode(model)
    calls = {
        "additive": lambda m: noise.additive(m, SIGMA_ADD, **options),
        "multiplicative": lambda m: noise.multiplicative(m, SIGMA_MULT, **options),
        "dropout_diffusion": lambda m: noise.dropout_diffusion(m, P_DROP, **options),
        "steer": lambda m: noise.steer(m, B, **options),
        "rnode": lambda m: noise.rnode(m, estimator="exact", **options),
        "residual_dropout": lambda m: noise.residual_dropout(m, P_RESIDUAL, **options),
        "stochastic_depth": lambda m: noise.stochastic_depth(m, SURVIVAL, **options),
        "shake_shake": lambda m: noise.shake_shake(m, **options),
        "shake_drop": lambda m: noise.shake_drop(m, SURVIVAL, **options),
    }
    return calls[name](model)


def refusal(base: str, names: tuple[str, ...]) -> str | None:
    """The message (a regex) of the construction-time `TypeError`, or None if it works."""
    discrete_base = base in ("stack", "classifier")
    for i, name in enumerate(names):
        before = names[:i]
        if discrete_base and name in ("steer", "rnode"):
            return rf"{name} cannot be applied to a ResidualStack"
        if not discrete_base and name in BRANCH:
            return "randomizes the residual branches of a discrete net"
        if base == "user" and name == "rnode":
            return "adds extra outputs .* UserNet is not a neurde.AbstractModel"
        if name == "steer" and name in before:
            return r"already .*STEER\(.*draws its own end time; a second STEER"
        if name == "rnode" and name in before:
            return r"already .*RNODE\(.*apply RNODE once"
        randomized = [n for n in before if n in NOISES + BRANCH]
        if discrete_base and name in NOISES + BRANCH and randomized:
            if "inference_mode" in before[before.index(randomized[0]) :]:
                return "switched off by `eqx.nn.inference_mode`"
        if discrete_base and name in BRANCH and any(n in BRANCH for n in before):
            return "already randomized by .* would be a\\s+second random multiplier"
    return None


CASES = [(base, pair) for base in BASES for pair in itertools.product(TRANSFORMS, repeat=2)]
CASES += [(base, triple) for base in BASES for triple in TRIPLES]
# Batch mode runs about 1 s a case eagerly: every transform alone on both, each pair of
# continuous transforms (in one order) and the continuous triples on the ODE.
CASES += [(base, (name,)) for base in BATCHED for name in TRANSFORMS]
CASES += [("batched", pair) for pair in itertools.combinations(CONTINUOUS, 2)]
CASES += [("batched", triple) for triple in TRIPLES[:4]]


def _on(names: tuple[str, ...], i: int) -> bool:
    """Whether the transform at position `i` (or the base's noise, i = -1) is switched on."""
    return "monte_carlo" in names or "inference_mode" not in names[i + 1 :]


# --- the hand-written references -------------------------------------------------------------


def _combined(parts: list[Any]) -> Any:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]

    def g(t, y):
        return jnp.sqrt(sum(p(t, y) ** 2 for p in parts))

    return g


def _continuous_reference(base: str, names: tuple[str, ...], y0: Any, key: Any) -> Any:
    """(state, extras) of the continuous composition, written out step by step; `y0` of
    shape (B, 2) is a batch solved as one state (batch mode)."""
    ode = build("ode")
    field = ode.field

    def f(t, y):
        if y.ndim == 2:
            return jax.vmap(lambda z: field(t, z, None))(y)
        return field(t, y, None)

    parts = [] if base != "sde" or not _on(names, -1) else [lambda t, y: _g0(t, y, None)]
    scales = {
        "additive": lambda t, y: SIGMA_ADD * jnp.ones_like(y),
        "multiplicative": lambda t, y: SIGMA_MULT * y,
        "dropout_diffusion": lambda t, y: np.sqrt(P_DROP / (1 - P_DROP)) * f(t, y),
    }
    parts += [scales[n] for i, n in enumerate(names) if n in NOISES and _on(names, i)]
    g = _combined(parts)
    steer_on = "steer" in names and _on(names, names.index("steer"))
    end = T
    if steer_on:
        end = jr.uniform(jr.fold_in(key, 1), (), minval=T - B, maxval=T + B)
    scheme = "rk4" if base != "sde" and g is None else "euler"
    brownian = None
    if g is not None and steer_on:
        brownian = diffrax.VirtualBrownianTree(0.0, T + B, tol=DT / 2, shape=y0.shape, key=key)
    elif g is not None:
        brownian = neurde.GridBrownianPath(0.0, T, DT, y0.shape, dtype=y0.dtype, key=key)
    penalize = "rnode" in names
    y, penalties = _march(f, g, brownian, scheme, _step_times(end), y0, penalize)
    extras = {}
    if "rnode" in names:
        on = _on(names, names.index("rnode"))
        extras = penalties if on else {k: jnp.zeros(()) for k in penalties}
    return y, extras


def _step_times(end: Any) -> list[Any]:
    """Diffrax's constant steps up to `end`: a first step of `dt0`, then the interval split
    evenly, N = ceil(end / dt0) steps in all."""
    end32 = np.float32(end)
    n = int(np.ceil(end32 / np.nextafter(np.float32(DT), np.float32(1))))
    return [0.0, DT, *(end32 * k / n for k in range(2, n)), end32][: n + 1]


@eqx.filter_jit
def _increment(brownian: Any, t0: Any, t1: Any) -> Any:
    return brownian.evaluate(t0, t1)


def _march(f, g, brownian, scheme, times, y0, penalize):
    """RK4 or Euler–Maruyama steps between the given times (with RNODE's integrands)."""

    batch = y0.shape[:-1]  # () for one example, (B,) in batch mode

    def augmented(t, state):
        y = state[0]
        fy = f(t, y)
        if not penalize:
            return fy, jnp.zeros(batch), jnp.zeros(batch)
        jac = jax.jacfwd(lambda z: f(t, z))
        jac = jax.vmap(jac)(y) if batch else jac(y)  # per example, (B, 2, 2) in batch mode
        return fy, jnp.sum(fy**2, axis=-1), jnp.sum(jac**2, axis=(-2, -1))

    state = (y0, jnp.zeros(batch), jnp.zeros(batch))
    for t, t_next in itertools.pairwise(times):
        h = t_next - t
        if scheme == "euler":
            k = augmented(t, state)
            dw = 0.0 if g is None else g(t, state[0]) * _increment(brownian, t, t_next)
            state = (state[0] + h * k[0] + dw, state[1] + h * k[1], state[2] + h * k[2])
        else:

            def shifted(k, a, h=h, state=state):
                return tuple(s + a * h * d for s, d in zip(state, k, strict=True))

            k1 = augmented(t, state)
            k2 = augmented(t + h / 2, shifted(k1, 0.5))
            k3 = augmented(t + h / 2, shifted(k2, 0.5))
            k4 = augmented(t + h, shifted(k3, 1.0))
            state = tuple(
                s + h * (a + 2 * b + 2 * c + d) / 6
                for s, a, b, c, d in zip(state, k1, k2, k3, k4, strict=True)
            )
    return state[0], {"kinetic": state[1], "jacobian": state[2]}


def _discrete_reference(names: tuple[str, ...], x: Any, key: Any, stack: Any) -> Any:
    """The output of the randomized stack, block by block."""
    regularizers = {
        "residual_dropout": noise.ResidualDropout(P_RESIDUAL),
        "stochastic_depth": noise.StochasticDepth(SURVIVAL),
        "shake_shake": noise.ShakeShake(),
        "shake_drop": noise.ShakeDrop(SURVIVAL),
    }
    noise_objects = {
        "additive": noise.Additive(SIGMA_ADD),
        "multiplicative": noise.Multiplicative(SIGMA_MULT),
        "dropout_diffusion": noise.DropoutDiffusion(P_DROP),
    }
    noises = [noise_objects[n] for n in names if n in NOISES]
    branch = next((regularizers[n] for n in names if n in BRANCH), None)
    randomized = [i for i, n in enumerate(names) if n in NOISES + BRANCH]
    on = bool(randomized) and _on(names, randomized[-1])
    keys = jr.split(key, DEPTH)
    h = stack.h
    for i in range(DEPTH):
        block = jax.tree.map(lambda a, i=i: a[i] if eqx.is_array(a) else a, stack.blocks)
        n = jnp.asarray(i)  # the block index, as the stack's scan passes it
        t = (n * h).astype(x.dtype)
        two = branch is not None and branch.branches == 2
        fs = block.branches(t, x, None) if two else (block(t, x, None),)
        mean = fs[0] if branch is None else branch.mean(n, DEPTH, fs)
        if not on:
            x = x + h * mean
            continue
        k_branch, k_noise = jr.split(keys[i])
        update = h * (mean if branch is None else branch.sample(k_branch, n, DEPTH, fs))
        if noises:
            scales = [nz.scale(t, x, mean) for nz in noises]
            g = scales[0] if len(scales) == 1 else jnp.sqrt(sum(s**2 for s in scales))
            update = update + jnp.sqrt(h) * g * jr.normal(k_noise, x.shape, x.dtype)
        x = x + update
    return x


def reference(base: str, names: tuple[str, ...], x: Any, key: Any) -> tuple[Any, dict]:
    """What the composition means, for input `x` and call key `key`."""
    mc_positions = [i for i, n in enumerate(names) if n == "monte_carlo"]
    if mc_positions:
        # The last MonteCarlo applied is the outermost; the others and every other
        # transform sit inside it, all switched on (MonteCarlo undoes inference_mode).
        inner = tuple(n for i, n in enumerate(names) if i != mc_positions[-1])
        inner = tuple(n for n in inner if n != "inference_mode")
        draws = [reference(base, inner, x, k) for k in jr.split(key, MC)]
        ys = jnp.mean(jnp.stack([d[0] for d in draws]), 0)
        extras = {k: jnp.mean(jnp.stack([d[1][k] for d in draws]), 0) for k in draws[0][1]}
        return ys, extras
    if base in ("ode", "sde"):
        return _continuous_reference(base, names, x, key)
    if base in BATCHED:
        return _continuous_reference("sde" if base == "batched_sde" else "ode", names, x, key)
    if base == "user":
        y, extras = _continuous_reference("ode", names, x, key)
        return build("user").scale * y, extras
    if base == "composed":
        y, extras = _continuous_reference("ode", names, jnp.tanh(x), key)
        return jnp.sin(y), extras
    model = build(base)
    if base == "stack":
        return _discrete_reference(names, x, key, model), {}
    u = _discrete_reference(names, model._embed(x), key, model.stack)
    return model._head(u), {}


# --- the test ------------------------------------------------------------------------------


def _input(base: str) -> Any:
    if base in BATCHED:
        return jnp.array([[0.5, -0.4], [-0.2, 0.3], [0.1, 0.6]])
    return jnp.array([0.4, -0.3, 0.2, 0.1]) if base == "classifier" else jnp.array([0.5, -0.4])


def _id(value: Any) -> str:
    return value if isinstance(value, str) else "-".join(value)


@pytest.mark.parametrize(("base", "names"), CASES, ids=_id)
def test_composition(base, names):
    model = build(base)
    for i, name in enumerate(names):
        message = refusal(base, names[: i + 1])
        if message is not None:
            with pytest.raises(TypeError, match=message):
                transform(name, model, base)
            return
        model = transform(name, model, base)
    x, key = _input(base), jr.key(3)
    # The references run with jit on, so the Brownian increments compile once for all.
    want, want_extras = reference(base, names, x, key)
    with jax.disable_jit():
        if isinstance(model, neurde.AbstractModel):
            solution = model.solve(x, key=key)
            got, extras = solution.ys, solution.extras
            assert set(extras) == set(want_extras)
            for k in want_extras:
                np.testing.assert_allclose(extras[k], want_extras[k], rtol=1e-4, atol=1e-6)
        else:
            got = model(x, key=key)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
