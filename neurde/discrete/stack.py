"""The scheme-generic residual stack: per-block parameters stacked on depth, one `lax.scan`."""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._types import Args, Input, MaybeKey, SaveTimes
from .._validation import check_key, check_state, is_concrete
from ..model import AbstractModel
from ..solution import ModelSolution
from .scheme import AbstractScheme


def _stepper(static_blocks, static_scheme, h, args, batched, inverse=False):
    """`apply(b_dyn, s_dyn, n, state, key)`: block `n`'s step (or its inverse); `batched`
    maps over a leading axis of the state."""

    def apply(b_dyn, s_dyn, n, state, key=None):
        scheme = eqx.combine(s_dyn, static_scheme)
        block = eqx.combine(b_dyn, static_blocks)

        def one(x):
            if inverse:
                return scheme.inverse_step(block, n, n * h, h, x, args)
            return scheme.step(block, n, n * h, h, x, args, key)

        return jax.vmap(one)(state) if batched else one(state)

    return apply


def _scan(
    static_blocks,
    static_scheme,
    h,
    depth,
    dyn_blocks,
    dyn_scheme,
    state,
    args,
    keys=None,
    save=None,
):
    """Run every block; `keys` (one per block) go to the scheme's step; `save(state)` (if
    given) is recorded after every block."""
    step = _stepper(static_blocks, static_scheme, h, args, batched=False)

    def body(state, xs):
        n, b_dyn, s_dyn, key = xs
        state = step(b_dyn, s_dyn, n, state, key)
        return state, None if save is None else save(state)

    return lax.scan(body, state, (jnp.arange(depth), dyn_blocks, dyn_scheme, keys))


def _reversible_backward(static_blocks, static_scheme, h, depth, batched):
    """Walk the blocks backwards from the output, rebuilding each block's input.

    Each step is undone with the scheme's `inverse_step` and differentiated locally, so
    memory does not grow with depth. With `batched=True` the output and its cotangent carry
    a leading batch axis and each block's parameter gradient is summed over the batch inside
    the scan.
    """

    def backward(dyn_blocks, dyn_scheme, out, args, ct_out):
        step = _stepper(static_blocks, static_scheme, h, args, batched)
        inverse = _stepper(static_blocks, static_scheme, h, args, batched, inverse=True)

        def body(carry, xs):
            state_next, ct = carry
            n, b_dyn, s_dyn = xs
            state = inverse(b_dyn, s_dyn, n, state_next)
            _, vjp = jax.vjp(lambda b, s, x: step(b, s, n, x), b_dyn, s_dyn, state)
            g_block, g_scheme, ct_state = vjp(ct)
            return (state, ct_state), (g_block, g_scheme)

        ns = jnp.arange(depth)
        (_, ct_state0), (g_blocks, g_scheme) = lax.scan(
            body, (out, ct_out), (ns, dyn_blocks, dyn_scheme), reverse=True
        )
        return g_blocks, g_scheme, ct_state0, jax.tree.map(jnp.zeros_like, args)

    return backward


def _reversible_scan(static_blocks, static_scheme, h, depth):
    """A scan for one example whose backward pass recomputes activations from the output.

    Only the output is kept for the backward pass. The backward pass has its own batching
    rule (`custom_vmap`): under `jax.vmap` over examples with shared parameters it runs the
    batched reversible walk, which sums each block's parameter gradient over the batch as it
    goes. Without the rule JAX would batch the single-example walk and keep every example's
    gradient for every block (batch x depth x parameters) until the end.
    """
    single = _reversible_backward(static_blocks, static_scheme, h, depth, batched=False)
    batched = _reversible_backward(static_blocks, static_scheme, h, depth, batched=True)

    @custom_vmap
    def backward(dyn_blocks, dyn_scheme, out, args, ct_out):
        return single(dyn_blocks, dyn_scheme, out, args, ct_out)

    @backward.def_vmap
    def backward_vmap(axis_size, in_batched, dyn_blocks, dyn_scheme, out, args, ct_out):
        blocks_b, scheme_b, out_b, args_b, ct_b = in_batched
        shared = not any(jax.tree.leaves((blocks_b, scheme_b, args_b)))
        if shared and all(jax.tree.leaves((out_b, ct_b))):
            grads = batched(dyn_blocks, dyn_scheme, out, args, ct_out)
            g_blocks, g_scheme, ct_state0, ct_args = grads
            # Parameter (and args) gradients are already summed over the batch.
            unbatched = jax.tree.map(lambda _: False, (g_blocks, g_scheme))
            dims = (*unbatched, jax.tree.map(lambda _: True, ct_state0))
            return grads, (*dims, jax.tree.map(lambda _: False, ct_args))
        axes = tuple(jax.tree.map(lambda b: 0 if b else None, in_batched))
        grads = jax.vmap(single, in_axes=axes)(dyn_blocks, dyn_scheme, out, args, ct_out)
        return grads, jax.tree.map(lambda _: True, grads)

    @jax.custom_vjp
    def run(dyn_blocks, dyn_scheme, state, args):
        args_ = (static_blocks, static_scheme, h, depth, dyn_blocks, dyn_scheme, state, args)
        return _scan(*args_)[0]

    def run_fwd(dyn_blocks, dyn_scheme, state, args):
        out = run(dyn_blocks, dyn_scheme, state, args)
        return out, (dyn_blocks, dyn_scheme, out, args)

    def run_bwd(residuals, ct_out):
        return backward(*residuals, ct_out)

    run.defvjp(run_fwd, run_bwd)
    return run


class ResidualStack(AbstractModel):
    r"""`depth` blocks applied by a numerical scheme: a network whose depth is time.

    Block $n$ is the field built by `make_block(key_n)`; the fields' parameters are stacked
    on a leading depth axis and the scheme's step is applied with `lax.scan`, so compile time
    does not grow with depth. Block $n$ sits at time $t_n = n h$. The same field in
    different schemes gives ResNet (`Euler`), LM-ResNet (`LinearMultistep`), RK-Nets
    (`RungeKutta`), PolyNet, RevNet and Hamiltonian nets (`AdditiveCoupling`), Momentum
    ResNets, midpoint and leapfrog nets.

    A stack is a `neurde.AbstractModel`: `stack(x, ts=None, *, args=None, key=None)` returns
    the output, or with save times `ts` on the block grid $\{0, h, \dots, \text{depth}\cdot
    h\}$, the output read off the state at each of them (time 0 is the input). `key` is split
    into one key per block for stochastic schemes (a stack randomized by a `neurde.noise`
    transform); deterministic schemes ignore it. `solve` also returns `stats`: `nfe` is the
    number of block evaluations.

    **Arguments:**

    - `make_block`: `key -> block`, e.g. `lambda k: MLPField(16, 32, 1, key=k)`; coupling
      schemes take an `AbstractCouplingBlock`. A function ignoring its key gives every block
      the same initial weights (stored per block, so they train independently).
    - `scheme`: an `AbstractScheme`.
    - `depth`: number of blocks (>= 1).
    - `h`: the step; defaults to `1 / depth` (the stack integrates over [0, 1]).
    - `memory_saving`: for reversible schemes, backpropagate by recomputing activations
      from the output instead of storing them (default `True` for reversible schemes).
      Memory is then flat in depth, also under `jax.vmap` over a batch (the backward pass
      has its own batching rule; benchmarks/revnet_memory.py). That rule sums each block's
      parameter gradient over the batch as it walks back, which is right for the gradient
      of a batch loss (`grad(mean(vmap(stack)))`, the training form) but not for
      per-example gradients: `vmap(grad(...))` with shared parameters gives every example
      the batch's summed parameter gradient (its input gradients stay per example). For
      per-example parameter gradients build the stack with `memory_saving=False`.
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
        memory_saving: bool | None = None,
        key: PRNGKeyArray,
    ):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"ResidualStack: `depth` must be an integer >= 1, got {depth!r}.")
        if h is not None and not 0 < h < float("inf"):
            raise ValueError(
                f"ResidualStack: the step `h` must be > 0, got {h!r}. Leave it out for h = 1/depth."
            )
        _check_scheme(scheme, depth, bool(memory_saving))
        check_key("ResidualStack", key)
        if not callable(make_block):
            raise TypeError(
                "ResidualStack: `make_block` must be a function `key -> block`, e.g. "
                f"`lambda k: MLPField(16, 32, 1, key=k)`, got {type(make_block).__name__}."
            )
        self.blocks = eqx.filter_vmap(make_block)(jr.split(key, depth))
        self.scheme = scheme
        self.depth = depth
        self.h = 1.0 / depth if h is None else float(h)
        self.memory_saving = scheme.reversible if memory_saving is None else memory_saving

    def _statics(self):
        dyn_blocks, static_blocks = eqx.partition(self.blocks, eqx.is_array)
        dyn_scheme, static_scheme = eqx.partition(self.scheme, eqx.is_array)
        return dyn_blocks, static_blocks, dyn_scheme, static_scheme

    def forward_state(
        self, y: PyTree[Array], args: Args = None, *, key: PRNGKeyArray | None = None
    ) -> Any:
        """The scheme's final state (e.g. the last two values of a two-step scheme)."""
        return self._run(y, args, key)[0]

    def _run(self, y: PyTree[Array], args: Args, key: Any, save: Any = None) -> tuple[Any, Any]:
        _check_scheme(self.scheme, self.depth, self.memory_saving)
        dyn_blocks, static_blocks, dyn_scheme, static_scheme = self._statics()
        state = self.scheme.init(y)
        if self.memory_saving:
            if save is not None:
                raise ValueError(
                    "ResidualStack: save times `ts` would store every activation, which "
                    "memory_saving=True avoids. Build the stack with memory_saving=False to "
                    "read the trajectory."
                )
            run = _reversible_scan(static_blocks, static_scheme, self.h, self.depth)
            return run(dyn_blocks, dyn_scheme, state, args), None
        keys = None if key is None else jr.split(key, self.depth)
        statics = (static_blocks, static_scheme, self.h, self.depth)
        return _scan(*statics, dyn_blocks, dyn_scheme, state, args, keys, save)

    def solve(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Apply every block to one (unbatched) input; see `neurde.AbstractModel.solve`."""
        # Floating and finite (a NaN input would give NaN logits without a word).
        y0 = check_state("ResidualStack", y0)
        if ts is None:
            ys = self.scheme.output(self.forward_state(y0, args, key=key))
        else:
            index = _grid_index(ts, self.h, self.depth)
            _, saved = self._run(y0, args, key, self.scheme.output)
            everything = jax.tree.map(
                lambda first, rest: jnp.concatenate([first[None], rest]),
                self.scheme.output(self.scheme.init(y0)),
                saved,
            )
            ys = jax.tree.map(lambda x: x[index], everything)
            ts = jnp.asarray(ts)
        steps = jnp.asarray(self.depth)
        stats = {
            "nfe": steps * self.scheme.evaluations_per_step,
            "num_steps": steps,
            "num_accepted_steps": steps,
            "num_rejected_steps": jnp.zeros_like(steps),
        }
        return ModelSolution(ys, ts, stats, {}, diffrax.RESULTS.successful)

    def inverse(self, state: Any, args: Args = None) -> Any:
        """Undo the whole stack: the initial state from `forward_state`'s result."""
        if not self.scheme.reversible:
            raise TypeError(
                f"ResidualStack.inverse: {type(self.scheme).__name__} is not reversible. "
                "Reversible schemes: AdditiveCoupling, Leapfrog, Momentum."
            )
        dyn_blocks, static_blocks, dyn_scheme, static_scheme = self._statics()
        inverse = _stepper(static_blocks, static_scheme, self.h, args, False, inverse=True)

        def body(state, xs):
            n, b_dyn, s_dyn = xs
            return inverse(b_dyn, s_dyn, n, state), None

        ns = jnp.arange(self.depth)
        state, _ = lax.scan(body, state, (ns, dyn_blocks, dyn_scheme), reverse=True)
        return state


def _check_scheme(scheme: Any, depth: int, memory_saving: bool) -> None:
    """The scheme fits the stack (checked at construction and again at every trace)."""
    if not isinstance(scheme, AbstractScheme):
        raise TypeError(
            f"ResidualStack: `scheme` must be a neurde.discrete scheme (Euler(), "
            f"RungeKutta.rk4(), ...), got {type(scheme).__name__}."
        )
    if scheme.depth is not None and scheme.depth != depth:
        raise ValueError(
            f"ResidualStack: the scheme {type(scheme).__name__} was built for depth "
            f"{scheme.depth} but the stack has depth={depth}. Build it with the same depth."
        )
    if memory_saving and not scheme.reversible:
        raise ValueError(
            f"ResidualStack: memory_saving=True needs a reversible scheme; "
            f"{type(scheme).__name__} is not. Use AdditiveCoupling, Leapfrog or Momentum."
        )


def _grid_index(ts: Any, h: float, depth: int) -> Array:
    """The block indices of save times on the grid {0, h, ..., depth h}."""
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(
            f"ResidualStack: `ts` must be a non-empty 1-D array of times on the block grid "
            f"(multiples of h = {h}), got shape {ts.shape}."
        )
    steps = ts / h
    index = jnp.round(steps).astype(jnp.int32)
    message = (
        f"ResidualStack: save times `ts` must be multiples of the step h = {h} in [0, "
        f"{depth * h}] (block n sits at time n h), strictly increasing."
    )
    off_grid = jnp.abs(steps - index) > 1e-4
    bad = off_grid | (index < 0) | (index > depth)
    if ts.shape[0] > 1:
        bad = bad | jnp.concatenate([jnp.zeros(1, bool), jnp.diff(index) <= 0])
    if is_concrete(ts):
        if np.any(np.asarray(bad)):
            raise ValueError(f"{message} Got ts={np.asarray(ts)!r}.")
        return index
    return eqx.error_if(index, bad, message)
