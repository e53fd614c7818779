"""Property-based tests: random arguments to the public constructors and calls.

Whatever the arguments (sizes, solver names, tolerances, times, dtypes, widths, values with
NaN, inf, zero and negative numbers), a call must either return finite arrays or raise one
of the documented errors: `ValueError` / `TypeError` whose message starts with the name of
the public call that refused the input, or Equinox's runtime error (from `eqx.error_if`)
naming it. Anything else (an internal JAX error, an `AttributeError`, a silent NaN) fails.

Profiles: a small default for CI (a few examples per test, structural choices from short
lists so that compilations are reused) and `NEURDE_HYPOTHESIS_PROFILE=thorough` for a long
run with many more examples.
"""

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings, strategies as st

import neurde
from neurde import data as nda, diffusion as nd, discrete as ndi, noise as nn

settings.register_profile(
    "neurde-ci",
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "neurde-thorough",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
THOROUGH = os.environ.get("NEURDE_HYPOTHESIS_PROFILE", "ci") == "thorough"
PROFILE = settings.get_profile("neurde-thorough" if THOROUGH else "neurde-ci")


def choice(everything: list[Any], ci: list[Any]) -> st.SearchStrategy[Any]:
    """All structural choices in the thorough run; in CI a few, so compilations are reused
    (each new solver, size or static setting of a model compiles its solve again)."""
    return st.sampled_from(everything if THOROUGH else ci)


# Numbers as a user might pass them: ordinary values and every special case.
SPECIAL = [0.0, -0.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e-30, 1e30]
NUMBERS = st.one_of(st.floats(-10, 10), st.sampled_from(SPECIAL))
POSITIVE = st.one_of(st.floats(1e-8, 1.0), st.sampled_from(SPECIAL))
VALUES = st.one_of(
    st.floats(-5, 5, width=32), st.sampled_from([float("nan"), float("inf"), 0.0, 1e30])
)

COUNTS: dict[str, int] = {"finite": 0, "refused": 0}


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    if THOROUGH:
        print(f"\nhypothesis outcomes: {COUNTS['finite']} finite, {COUNTS['refused']} refused")


def _finite(tree: Any, log_density: bool = False) -> bool:
    leaves = [x for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    if log_density:  # log 0 = -inf is a value of a log-density, NaN and +inf are not
        return all(bool(jnp.all(~jnp.isnan(x) & (x < jnp.inf))) for x in leaves)
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


def outcome(call: Callable[[], Any], owners: tuple[str, ...], log_density: bool = False) -> None:
    """`call()` returns finite arrays, or refuses with a documented error naming an owner."""
    try:
        result = jax.block_until_ready(call())
    except eqx.EquinoxRuntimeError as e:
        assert any(o in str(e) for o in owners), f"runtime error names no owner: {e}"
    except (ValueError, TypeError) as e:
        message = str(e).lstrip("`")
        assert message.startswith(owners), f"internal {type(e).__name__}: {e}"
    else:
        assert _finite(result, log_density), f"silent non-finite result: {result}"
        COUNTS["finite"] += 1
        return
    COUNTS["refused"] += 1


def vector(draw: Any, size: int) -> jax.Array:
    return jnp.asarray(draw(st.lists(VALUES, min_size=size, max_size=size)), jnp.float32)


@functools.cache
def mlp(size: int) -> neurde.MLPField:
    return neurde.MLPField(size, 4, 1, key=jr.key(size))


@functools.cache
def jitted_call() -> Callable[..., Any]:
    return eqx.filter_jit(lambda model, y0, ts: model(y0, ts))


SOLVERS = {
    "tsit5": diffrax.Tsit5(),
    "dopri5": diffrax.Dopri5(),
    "bosh3": diffrax.Bosh3(),
    "heun": diffrax.Heun(),
    "euler": diffrax.Euler(),
    "rk4": neurde.RK4(),
}


@st.composite
def ode_case(draw: Any) -> Callable[[], Any]:
    size = draw(choice([1, 2], [2]))
    state = draw(st.sampled_from([size, size, 3]))  # sometimes the wrong width
    solver = SOLVERS[draw(choice(sorted(SOLVERS), ["tsit5", "rk4"]))]
    t0 = draw(st.sampled_from([0.0, 0.0, 1.0, float("nan")]))
    t1 = draw(st.sampled_from([1.0, 1.0, 0.5, -1.0, None, float("inf")]))
    dt0 = draw(st.sampled_from([None, 0.25, 0.25, 0.0, -0.1]))
    rtol, atol = draw(POSITIVE), draw(POSITIVE)
    y0 = vector(draw, state)
    ts = None
    if draw(st.booleans()):
        length = draw(choice([1, 2, 3], [2]))
        times = draw(st.lists(st.floats(-0.5, 1.5), min_size=length, max_size=length))
        ts = jnp.asarray(sorted(times))
    jit = draw(choice([False, True], [False]))
    x64 = draw(choice([False, True], [False]))

    note(repr({k: v for k, v in locals().items() if k != "draw"}))

    def call() -> Any:
        with jax.enable_x64(x64):
            # Under x64 the state and times are float64, the field's parameters float32.
            y, s = (None if a is None else jnp.asarray(a, float) for a in (y0, ts))
            model = neurde.NeuralODE(
                mlp(size),
                solver=solver,
                t0=t0,
                t1=t1,
                dt0=dt0,
                rtol=rtol,
                atol=atol,
                max_steps=64,
            )
            return jitted_call()(model, y, s) if jit else model(y, s)

    return call


@PROFILE
@given(ode_case())
def test_neural_ode(call: Callable[[], Any]):
    # The default controller's tolerances are checked by `neurde.Tolerances`.
    outcome(call, ("NeuralODE", "Tolerances"))


@st.composite
def sde_case(draw: Any) -> Callable[[], Any]:
    size = 2
    noise = draw(choice(["diagonal", "scalar", "general", "pink"], ["diagonal", "pink"]))
    noise_size = draw(st.sampled_from([None, 2, 0])) if noise == "general" else None
    diffusion = neurde.MLPField(size, 4, 1, out_shape=(size, 2), key=jr.key(3))
    diffusion = diffusion if noise == "general" else mlp(size)
    dt0 = draw(st.sampled_from([0.25, 0.3, 0.0]))
    brownian = draw(choice([None, "tree", "grid", "white"], [None, "white"]))
    y0 = vector(draw, draw(st.sampled_from([size, 3])))
    key = draw(st.sampled_from([jr.key(0), None, 3]))

    note(repr({k: v for k, v in locals().items() if k != "draw"}))

    def call() -> Any:
        model = neurde.NeuralSDE(
            mlp(size),
            diffusion,
            noise=noise,  # pyright: ignore[reportArgumentType]
            noise_size=noise_size,
            t1=1.0,
            dt0=dt0,
            brownian=brownian,  # pyright: ignore[reportArgumentType]
        )
        return model(y0, key=key)

    return call


@PROFILE
@given(sde_case())
def test_neural_sde(call: Callable[[], Any]):
    outcome(call, ("NeuralSDE",))


@st.composite
def stack_case(draw: Any) -> Callable[[], Any]:
    depth = draw(choice([1, 2, 0], [2, 0]))
    width = draw(choice([2, 4], [2]))
    everything = ["euler", "rk", "momentum", "coupling", "multistep"]
    scheme_name = draw(choice(everything, ["euler", "coupling"]))
    block_width = draw(st.sampled_from([width, width, 3]))
    x = vector(draw, width)
    # Steps up to 1: larger ones blow up these explicit schemes, as they should (see
    # tests/discrete/test_stability.py), which is not an input error.
    # `h` is static: in CI, few values, so that the stack compiles a few times only.
    steps = st.floats(1e-3, 1.0) if THOROUGH else st.sampled_from([0.5])
    h = draw(st.one_of(st.none(), steps, st.sampled_from(SPECIAL[:6])))

    note(repr({k: v for k, v in locals().items() if k != "draw"}))

    def call() -> Any:
        schemes = {
            "euler": ndi.Euler(),
            "rk": ndi.RungeKutta.rk4(),
            "momentum": ndi.Momentum(0.9),
            "coupling": ndi.AdditiveCoupling(),
            "multistep": ndi.LinearMultistep(max(depth, 1)),
        }
        if scheme_name == "coupling":

            def make(k: Any) -> Any:
                return ndi.HamiltonianBlock(block_width // 2 or 1, key=k)
        else:

            def make(k: Any) -> Any:
                return neurde.LinearField(-jnp.eye(block_width))

        stack = ndi.ResidualStack(make, schemes[scheme_name], depth, h=h, key=jr.key(0))
        return stack(x)

    return call


@PROFILE
@given(stack_case())
def test_residual_stack(call: Callable[[], Any]):
    owners = ("ResidualStack", "LinearField", "HamiltonianBlock", "AdditiveCoupling")
    owners += ("LinearMultistep", "Momentum")
    outcome(call, owners)


@st.composite
def diffusion_case(draw: Any) -> Callable[[], Any]:
    kind = draw(choice(["vp", "ve", "subvp"], ["vp", "ve"]))
    params = draw(st.one_of(st.just(()), st.tuples(NUMBERS, NUMBERS)))  # () = defaults
    other = draw(st.sampled_from([None, "vp", "ve"]))
    cov = jnp.asarray(draw(st.lists(VALUES, min_size=4, max_size=4)), jnp.float32)
    cov = cov.reshape(2, 2)
    if draw(st.booleans()):
        cov = cov @ cov.T  # usually a valid covariance
    t = draw(st.one_of(st.floats(0, 1), st.sampled_from([0.0, -0.5, 2.0, float("nan")])))
    x = vector(draw, 2)

    note(repr({k: v for k, v in locals().items() if k != "draw"}))

    def call() -> Any:
        build = {"vp": nd.VPSDE, "ve": nd.VESDE, "subvp": nd.SubVPSDE}
        sde = build[kind](*params)
        score = nd.GaussianScore(sde, jnp.zeros(2), cov)
        user = sde if other is None else build[other]()
        loss = nd.denoising_score_matching(score, user, x, t, key=jr.key(0))
        return loss, nd.Score(score, sde, "score")(t, x)

    return call


@PROFILE
@given(diffusion_case())
def test_diffusion(call: Callable[[], Any]):
    owners = ("VPSDE", "VESDE", "SubVPSDE", "GaussianScore", "Score", "denoising_score_matching")
    outcome(call, owners)


@st.composite
def data_case(draw: Any) -> Callable[[], Any]:
    everything = ["spiral", "two_moons", "eight_gaussians", "ou", "minibatches"]
    name = draw(choice(everything, ["two_moons", "eight_gaussians", "minibatches"]))
    n = draw(st.sampled_from([4, 0, -1, 2]))
    scale = draw(NUMBERS)
    dtype = draw(st.sampled_from([None, jnp.float32, jnp.int32, "float", 3]))
    key = draw(st.sampled_from([jr.key(0), jr.PRNGKey(0), None, 3]))

    note(repr({k: v for k, v in locals().items() if k != "draw"}))

    def call() -> Any:
        if name == "spiral":
            return nda.spiral(n, 3, t1=1.0, noise=scale, dtype=dtype, key=key)
        if name == "two_moons":
            return nda.two_moons(n, noise=scale, key=key)
        if name == "eight_gaussians":
            return nda.eight_gaussians_log_prob(nda.eight_gaussians(n, key=key), std=scale)
        if name == "ou":
            return nda.ornstein_uhlenbeck(n, 3, t1=1.0, sigma=scale, dtype=dtype, key=key)
        return next(nda.minibatches(jnp.zeros((4, 2)), n, key=key))

    return call


@PROFILE
@given(data_case())
def test_data(call: Callable[[], Any]):
    owners = ("spiral", "two_moons", "eight_gaussians", "ornstein_uhlenbeck", "minibatches")
    outcome(call, owners, log_density=True)


@st.composite
def transform_case(draw: Any) -> Callable[[], Any]:
    which = draw(choice(["additive", "multiplicative", "dropout", "steer"], ["additive", "steer"]))
    # The scale is a static setting of the transform: few values in CI (see `choice`).
    # Finite scales up to 10: a noise scale of 1e30 overflows Euler-Maruyama's exp-like
    # growth (multiplicative noise) to NaN, a numerical limit rather than an input error.
    value = draw(st.floats(-10, 10) if THOROUGH else st.sampled_from([0.1, *SPECIAL[:6]]))
    y0 = vector(draw, 2)

    note(repr({k: v for k, v in locals().items() if k != "draw"}))

    def call() -> Any:
        model = neurde.NeuralODE(mlp(2), t1=1.0, dt0=0.25)
        if which == "additive":
            wrapped = nn.additive(model, value)
        elif which == "multiplicative":
            wrapped = nn.multiplicative(model, value)
        elif which == "dropout":
            wrapped = nn.dropout_diffusion(model, value)
        else:
            wrapped = nn.steer(model, value)
        return wrapped(y0, key=jr.key(1))

    return call


@PROFILE
@given(transform_case())
def test_noise_transforms(call: Callable[[], Any]):
    owners = ("Additive", "Multiplicative", "DropoutDiffusion", "STEER", "NeuralODE")
    outcome(call, (*owners, "NoisyModel", "neurde.noise"))


@PROFILE
@given(
    rtol=NUMBERS,
    atol=NUMBERS,
    size=st.integers(-1, 3),
    dtype=st.sampled_from([None, jnp.float32, jnp.int32]),
)
def test_constructors(rtol: float, atol: float, size: int, dtype: Any):
    outcome(lambda: neurde.Tolerances(rtol, atol), ("Tolerances",))
    outcome(lambda: neurde.MLPField(size, 4, 1, dtype=dtype, key=jr.key(0)), ("MLPField",))
    matrix = jnp.full((max(size, 0), 2), rtol)
    outcome(lambda: neurde.LinearField(matrix), ("LinearField",))


def test_outcome_detects_internal_errors():
    # The property is only as good as its oracle: it must fail on each kind of bad outcome.
    with pytest.raises(AssertionError, match="internal TypeError"):
        outcome(lambda: jnp.ones(2) @ jnp.ones(3), ("NeuralODE",))
    with pytest.raises(AssertionError, match="silent non-finite"):
        outcome(lambda: jnp.array([math.nan]), ("NeuralODE",))
    with pytest.raises(AttributeError):
        outcome(lambda: np.int64(1).nonexistent, ("NeuralODE",))  # pyright: ignore[reportAttributeAccessIssue]
    outcome(lambda: neurde.Tolerances(-1.0), ("Tolerances",))
