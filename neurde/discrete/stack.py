"""The scheme-generic residual stack: per-block parameters stacked on depth, one `lax.scan`."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax import lax
from jaxtyping import Array, PRNGKeyArray, PyTree

from .scheme import AbstractScheme


def _scan(static_blocks, static_scheme, t0, h, depth, dyn_blocks, dyn_scheme, state, args):
    def body(state, xs):
        n, b_dyn, s_dyn = xs
        scheme = eqx.combine(s_dyn, static_scheme)
        block = eqx.combine(b_dyn, static_blocks)
        return scheme.step(block, n, t0 + n * h, h, state, args), None

    ns = jnp.arange(depth)
    state, _ = lax.scan(body, state, (ns, dyn_blocks, dyn_scheme))
    return state


def _reversible_scan(static_blocks, static_scheme, t0, h, depth):
    """A scan whose backward pass rebuilds each block's input from its output.

    Only the stack's output is kept for the backward pass: each step is undone with the
    scheme's `inverse_step` and differentiated locally, so memory does not grow with depth.
    """

    def forward(dyn_blocks, dyn_scheme, state, args):
        return _scan(
            static_blocks, static_scheme, t0, h, depth, dyn_blocks, dyn_scheme, state, args
        )

    @jax.custom_vjp
    def run(dyn_blocks, dyn_scheme, state, args):
        return forward(dyn_blocks, dyn_scheme, state, args)

    def run_fwd(dyn_blocks, dyn_scheme, state, args):
        out = forward(dyn_blocks, dyn_scheme, state, args)
        return out, (dyn_blocks, dyn_scheme, out, args)

    def run_bwd(residuals, ct_out):
        dyn_blocks, dyn_scheme, out, args = residuals

        def body(carry, xs):
            state_next, ct = carry
            n, b_dyn, s_dyn = xs
            t = t0 + n * h
            scheme = eqx.combine(s_dyn, static_scheme)
            state = scheme.inverse_step(
                eqx.combine(b_dyn, static_blocks), n, t, h, state_next, args
            )

            def one_step(b, s, x):
                block = eqx.combine(b, static_blocks)
                return eqx.combine(s, static_scheme).step(block, n, t, h, x, args)

            _, vjp = jax.vjp(one_step, b_dyn, s_dyn, state)
            g_block, g_scheme, ct_state = vjp(ct)
            return (state, ct_state), (g_block, g_scheme)

        ns = jnp.arange(depth)
        (_, ct_state0), (g_blocks, g_scheme) = lax.scan(
            body, (out, ct_out), (ns, dyn_blocks, dyn_scheme), reverse=True
        )
        return g_blocks, g_scheme, ct_state0, jax.tree.map(jnp.zeros_like, args)

    run.defvjp(run_fwd, run_bwd)
    return run


class ResidualStack(eqx.Module):
    r"""`depth` blocks applied by a numerical scheme: a network whose depth is time.

    Block $n$ is the field built by `make_block(key_n)`; the fields' parameters are stacked
    on a leading depth axis and the scheme's step is applied with `lax.scan`, so compile time
    does not grow with depth. Block $n$ sits at time $t_n = n h$. The same field in
    different schemes gives ResNet (`Euler`), LM-ResNet (`LinearMultistep`), RK-Nets
    (`RungeKutta`), PolyNet, RevNet and Hamiltonian nets (`AdditiveCoupling`), Momentum
    ResNets, midpoint and leapfrog nets.

    **Arguments:**

    - `make_block`: `key -> block`, e.g. `lambda k: MLPField(16, 32, 1, key=k)`; coupling
      schemes take an `AbstractCouplingBlock`. A function ignoring its key gives every block
      the same initial weights (stored per block, so they train independently).
    - `scheme`: an `AbstractScheme`.
    - `depth`: number of blocks (>= 1).
    - `h`: the step; defaults to `1 / depth` (the stack integrates over [0, 1]).
    - `memory_saving`: for reversible schemes, backpropagate by recomputing activations
      from the output instead of storing them (default `False`). Memory is then flat in
      depth for one example; but under `jax.vmap` over a batch, JAX batches the custom
      backward pass too and keeps per-example parameter gradients for every block
      (batch x depth x parameters) before summing, which costs more than storing
      activations (benchmarks/revnet_memory.py). Use it unbatched, or with fields that
      take the batch inside the state.
    - `key`: split into one key per block.
    """

    blocks: PyTree[Any]
    scheme: AbstractScheme
    depth: int = eqx.field(static=True)
    h: float = eqx.field(static=True)
    memory_saving: bool = eqx.field(static=True)

    def __init__(
        self,
        make_block: Callable[[PRNGKeyArray], Any],
        scheme: AbstractScheme,
        depth: int,
        *,
        h: float | None = None,
        memory_saving: bool = False,
        key: PRNGKeyArray,
    ):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"ResidualStack: `depth` must be an integer >= 1, got {depth!r}.")
        if h is not None and not h > 0:
            raise ValueError(
                f"ResidualStack: the step `h` must be > 0, got {h!r}. Leave it out for h = 1/depth."
            )
        if not isinstance(scheme, AbstractScheme):
            raise TypeError(
                f"ResidualStack: `scheme` must be a neurde.discrete scheme (Euler(), "
                f"RungeKutta.rk4(), ...), got {type(scheme).__name__}."
            )
        k = getattr(scheme, "k", None)
        if k is not None and k.shape[0] != depth:
            raise ValueError(
                f"ResidualStack: the scheme has {k.shape[0]} per-block coefficients but "
                f"depth={depth}. Build it with the same depth."
            )
        if memory_saving and not scheme.reversible:
            raise ValueError(
                f"ResidualStack: memory_saving=True needs a reversible scheme; "
                f"{type(scheme).__name__} is not. Use AdditiveCoupling, Leapfrog or Momentum."
            )
        self.blocks = eqx.filter_vmap(make_block)(jr.split(key, depth))
        self.scheme = scheme
        self.depth = depth
        self.h = 1.0 / depth if h is None else float(h)
        self.memory_saving = bool(memory_saving)

    def _statics(self):
        dyn_blocks, static_blocks = eqx.partition(self.blocks, eqx.is_array)
        dyn_scheme, static_scheme = eqx.partition(self.scheme, eqx.is_array)
        return dyn_blocks, static_blocks, dyn_scheme, static_scheme

    def forward_state(self, y: PyTree[Array], args: Any = None) -> Any:
        """The scheme's final state (e.g. the last two values of a two-step scheme)."""
        dyn_blocks, static_blocks, dyn_scheme, static_scheme = self._statics()
        state = self.scheme.init(y)
        if self.memory_saving:
            run = _reversible_scan(static_blocks, static_scheme, 0.0, self.h, self.depth)
            return run(dyn_blocks, dyn_scheme, state, args)
        return _scan(
            static_blocks,
            static_scheme,
            0.0,
            self.h,
            self.depth,
            dyn_blocks,
            dyn_scheme,
            state,
            args,
        )

    def __call__(
        self, y: PyTree[Array], args: Any = None, *, key: PRNGKeyArray | None = None
    ) -> PyTree[Array]:
        """Apply every block to one (unbatched) input and return the output."""
        del key
        return self.scheme.output(self.forward_state(y, args))

    def inverse(self, state: Any, args: Any = None) -> Any:
        """Undo the whole stack: the initial state from `forward_state`'s result."""
        if not self.scheme.reversible:
            raise TypeError(
                f"ResidualStack.inverse: {type(self.scheme).__name__} is not reversible. "
                "Reversible schemes: AdditiveCoupling, Leapfrog, Momentum."
            )
        dyn_blocks, static_blocks, dyn_scheme, static_scheme = self._statics()

        def body(state, xs):
            n, b_dyn, s_dyn = xs
            scheme = eqx.combine(s_dyn, static_scheme)
            block = eqx.combine(b_dyn, static_blocks)
            return scheme.inverse_step(block, n, n * self.h, self.h, state, args), None

        ns = jnp.arange(self.depth)
        state, _ = lax.scan(body, state, (ns, dyn_blocks, dyn_scheme), reverse=True)
        return state
