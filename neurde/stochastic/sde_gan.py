r"""SDE-GAN: a neural SDE generator, a neural CDE discriminator, the Wasserstein game."""

from collections.abc import Callable
from typing import Any, cast

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._types import Args, MaybeKey, SaveTimes
from .._validation import require_key
from ..continuous.cde import NeuralCDE
from ..fields import MLPField
from ..model import AbstractContinuousModel, AbstractModel, AbstractWrapper
from ..sde import NeuralSDE
from ..solution import ModelSolution
from ..tolerances import trainable

# Tag of `jr.fold_in(key, tag)` for the initial noise V; the Brownian motion uses the key itself.
_INITIAL_NOISE_KEY = 105


def lipswish(x: Array) -> Array:
    r"""LipSwish, $0.909\,x\,\mathrm{sigmoid}(x)$: SiLU scaled to be 1-Lipschitz.

    References: Chen, Behrmann, Duvenaud, Jacobsen, "Residual Flows for Invertible Generative
    Modeling", NeurIPS 2019; its use in SDE-GANs: Kidger et al., NeurIPS 2021, Section 5.
    """
    return 0.909 * jax.nn.silu(x)


def _check_sizes(owner: str, **sizes: Any) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: `{name}` must be an integer >= 1, got {value!r}.")


class SDEGenerator(AbstractWrapper):
    r"""The generator of an SDE-GAN: initial noise, a neural SDE, a linear readout.

    $$V \sim \mathcal N(0, I_v), \quad X_0 = \zeta_\theta(V), \quad
      dX_t = \mu_\theta(t, X_t)\,dt + \sigma_\theta(t, X_t) \circ dW_t, \quad
      Y_t = \ell_\theta(X_t),$$

    with $X \in \mathbb R^h$ the hidden state, $W$ an $m$-dimensional Brownian motion
    (general noise, $\sigma_\theta(t, x) \in \mathbb R^{h \times m}$), Stratonovich calculus
    and the reversible Heun solver with constant steps, as in the paper. $\mu_\theta$ and
    $\sigma_\theta$ are MLPs of $(t, x)$ with LipSwish units and a final `tanh` (it keeps the
    SDE from blowing up during the game); $\zeta_\theta$ an MLP, $\ell_\theta$ linear.

    On the model interface: `generator(v, ts, *, key)` returns one sample path $Y$ at the
    times `ts`, shape `(len(ts), data_size)`. `v` is the initial noise $V$, shape
    `(initial_noise_size,)`, or `None` to draw it from `jr.fold_in(key, 105)`; the Brownian
    motion is drawn from `key` itself (on the step grid: the same key, the same path, under
    `jax.vmap` too). The SDE is the `neurde.NeuralSDE` held as `model`, so noise transforms,
    `neurde.fit`, ensembles and checkpoints act on it unchanged; its `adjoint=` takes any
    Diffrax adjoint, or `adjoint="reversible"`: reversible Heun's exact adjoint, as in the
    paper (the states are rebuilt backwards, so memory does not grow with the number of
    steps; it does not integrate extra outputs such as `noise.rnode`'s penalties).
    In inference mode (`eqx.nn.inference_mode`) $V = 0$ when `v` is `None` (whatever the
    key), the Brownian motion is dropped (the drift is solved as an ODE) and no key is
    needed.

    **Arguments:**

    - `data_size`, `initial_noise_size`, `noise_size`, `hidden_size`: the sizes of $Y$,
      $V$, $W$ and $X$.
    - `t1`, `dt0`: the interval $[t_0, t_1]$ and the constant step (`ts` must lie in it).
    - `width_size`, `depth`: the MLPs' hidden width and number of hidden layers.
    - `key`: initialization key.
    - `sde_kwargs`: further settings of the `neurde.NeuralSDE` (`t0` (default 0), `solver`
      (default `diffrax.ReversibleHeun()`), `adjoint`, `brownian`, ...).

    References: Kidger, Foster, Li, Lyons, "Neural SDEs as Infinite-Dimensional GANs", ICML
    2021, Section 3; Kidger, Foster, Li, Lyons, "Efficient and Accurate Gradients for Neural
    SDEs", NeurIPS 2021 (reversible Heun, LipSwish); Diffrax's `neural_sde` example.
    """

    initial: eqx.nn.MLP
    model: AbstractContinuousModel
    readout: eqx.nn.Linear
    initial_noise_size: int = eqx.field(static=True)
    inference: bool = False

    def __init__(
        self,
        data_size: int,
        initial_noise_size: int,
        noise_size: int,
        hidden_size: int,
        *,
        t1: float,
        dt0: float,
        width_size: int = 16,
        depth: int = 1,
        inference: bool = False,
        key: PRNGKeyArray,
        **sde_kwargs: Any,
    ):
        sizes = dict(data_size=data_size, initial_noise_size=initial_noise_size)
        sizes.update(noise_size=noise_size, hidden_size=hidden_size, width_size=width_size)
        _check_sizes("SDEGenerator", **sizes)
        ikey, fkey, gkey, rkey = jr.split(key, 4)
        drift, diffusion = (
            MLPField(
                hidden_size,
                width_size,
                depth,
                out_shape=shape,
                time_dependent=True,
                activation=lipswish,
                final_activation=jnp.tanh,
                key=k,
            )
            for shape, k in (((hidden_size,), fkey), ((hidden_size, noise_size), gkey))
        )
        settings: dict[str, Any] = dict(
            solver=diffrax.ReversibleHeun(),
            # Reversible Heun has an error estimate, so it would default to adaptive steps.
            stepsize_controller=diffrax.ConstantStepSize(),
            t1=float(t1),
            dt0=float(dt0),
        )
        settings.update(sde_kwargs, noise="general", noise_size=noise_size)
        self.initial = eqx.nn.MLP(
            initial_noise_size, hidden_size, width_size, depth, activation=lipswish, key=ikey
        )
        self.model = NeuralSDE(drift, diffusion, **settings)
        self.readout = eqx.nn.Linear(hidden_size, data_size, key=rkey)
        self.initial_noise_size = initial_noise_size
        self.inference = inference

    def __check_init__(self):
        if not isinstance(self.model, AbstractContinuousModel):
            raise TypeError(
                f"SDEGenerator: `model` must be a continuous neurde model (the NeuralSDE, "
                f"possibly wrapped by transforms), got {type(self.model).__name__}."
            )

    def solve(
        self, y0: Any, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """One sample path at `ts` from the initial noise `y0` (or `None`: drawn from `key`).

        See `neurde.AbstractModel.solve`; `ts` is required.
        """
        if ts is None:
            raise ValueError(
                "SDEGenerator: `ts` (the times of the sample path) is required, e.g. "
                "`generator(None, jnp.linspace(0.0, t1, 10), key=key)`."
            )
        if not self.inference:
            key = require_key(
                "SDEGenerator",
                key,
                "draw the initial noise and the Brownian motion",
                "To drop the noise instead, use `eqx.nn.inference_mode(generator)`.",
            )
        shape = (self.initial_noise_size,)
        dtype = self.readout.weight.dtype
        if y0 is None and self.inference:
            y0 = jnp.zeros(shape, dtype)
        elif y0 is None:
            y0 = jr.normal(jr.fold_in(cast(PRNGKeyArray, key), _INITIAL_NOISE_KEY), shape, dtype)
        elif not eqx.is_array_like(y0) or jnp.shape(y0) != shape:
            raise ValueError(
                f"SDEGenerator: the initial noise `y0` must have shape {shape} "
                f"(initial_noise_size={self.initial_noise_size}), got "
                f"{jax.tree.map(jnp.shape, y0)}. Pass `y0=None` to draw it from `key`."
            )
        x0 = self.initial(jnp.asarray(y0, dtype))
        return self.model.solve(x0, ts, args=args, key=key).map(self.readout)


class CDEDiscriminator(AbstractWrapper):
    r"""The discriminator of an SDE-GAN: a neural CDE that scores one path.

    $$H_{t_0} = \xi_\phi(t_0, Y_{t_0}), \qquad dH_t = f_\phi(t, H_t)\,d(t, Y_t), \qquad
      D(Y) = m_\phi \cdot H_{t_1},$$

    driven by the time-augmented path $(t, Y_t)$ (Hermite interpolation of the samples),
    with the score read from the final state. $f_\phi$ is an MLP with LipSwish units and a
    final `tanh`, $\xi_\phi$ an MLP; with `clip_discriminator` after every update the
    network is Lipschitz, as the Wasserstein objective needs. The CDE is the
    `neurde.continuous.NeuralCDE` held as `model`, solved (on its normalized time) by the
    reversible Heun method in `steps` constant steps.

    `discriminator((ts, ys))` returns the scalar score of the path `ys`, shape
    `(len(ts), data_size)`, sampled at the strictly increasing times `ts`; a precomputed
    `neurde.continuous.ControlPath` (Hermite, with time) is accepted as well.

    **Arguments:**

    - `data_size`, `hidden_size`: the sizes of $Y$ and $H$.
    - `width_size`, `depth`: the MLPs' hidden width and number of hidden layers.
    - `steps`: the number of solver steps over the path.
    - `key`: initialization key.
    - `cde_kwargs`: further settings of the `NeuralCDE`'s inner ODE (`solver`, `adjoint`, ...).

    References: Kidger, Foster, Li, Lyons, "Neural SDEs as Infinite-Dimensional GANs", ICML
    2021, Section 3.2; Kidger, Morrill, Foster, Lyons, "Neural Controlled Differential
    Equations for Irregular Time Series", NeurIPS 2020.
    """

    model: AbstractModel

    def __init__(
        self,
        data_size: int,
        hidden_size: int,
        *,
        width_size: int = 16,
        depth: int = 1,
        steps: int = 16,
        key: PRNGKeyArray,
        **cde_kwargs: Any,
    ):
        sizes = dict(data_size=data_size, hidden_size=hidden_size, width_size=width_size)
        _check_sizes("CDEDiscriminator", **sizes, steps=steps)
        channels = data_size + 1
        fkey, ikey, rkey = jr.split(key, 3)
        field = MLPField(
            hidden_size,
            width_size,
            depth,
            out_shape=(hidden_size, channels),
            time_dependent=True,
            activation=lipswish,
            final_activation=jnp.tanh,
            key=fkey,
        )
        initial = eqx.nn.MLP(
            channels, hidden_size, width_size, depth, activation=lipswish, key=ikey
        )
        settings: dict[str, Any] = dict(
            solver=diffrax.ReversibleHeun(),
            stepsize_controller=diffrax.ConstantStepSize(),
            dt0=1.0 / steps,
        )
        self.model = NeuralCDE(
            data_size,
            hidden_size,
            1,
            field=field,
            initial=initial,
            readout=eqx.nn.Linear(hidden_size, 1, key=rkey),
            key=key,
            **{**settings, **cde_kwargs},
        )

    def solve(
        self, y0: Any, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """The score of one path `y0 = (times, values)`; `ts` must be `None`."""
        if ts is not None:
            raise ValueError(
                "CDEDiscriminator: the score reads the final state, so `ts` must be None; the "
                "path's own times go in the input: `discriminator((ts, ys))`."
            )
        return self.model.solve(y0, args=args, key=key).map(lambda score: score[0])


def clip_discriminator(discriminator: Any) -> Any:
    r"""Clip the weights of every linear layer $\mathbb R^a \to \mathbb R^b$ to $[-1/b, 1/b]$.

    Called after every discriminator update, this "careful clipping" bounds each linear
    map's $\ell^1$ operator norm by 1 ($\|Ax\|_1 \le \sum_j \sum_i |A_{ji}||x_i| \le
    \|x\|_1$); with 1-Lipschitz LipSwish units and `tanh`, the discriminator stays Lipschitz,
    as the Wasserstein objective requires, without a gradient penalty (which would need a
    double backward through the SDE solve). Biases are not clipped.

    **Arguments:**

    - `discriminator`: any module (typically a `CDEDiscriminator`).

    **Returns:**

    The module with its `eqx.nn.Linear` weights clipped.

    References: Kidger, Foster, Li, Lyons, "Efficient and Accurate Gradients for Neural SDEs",
    NeurIPS 2021, Section 5 ("careful clipping"), as in torchsde's and Diffrax's examples.
    """

    def clip(leaf: Any) -> Any:
        if not isinstance(leaf, eqx.nn.Linear):
            return leaf
        bound = 1.0 / leaf.out_features if isinstance(leaf.out_features, int) else 1.0
        return eqx.tree_at(lambda lin: lin.weight, leaf, jnp.clip(leaf.weight, -bound, bound))

    is_linear = lambda x: isinstance(x, eqx.nn.Linear)  # noqa: E731
    return jax.tree.map(clip, discriminator, is_leaf=is_linear)


def wasserstein_loss(
    generator: AbstractModel,
    discriminator: AbstractModel,
    ts: Float[ArrayLike, " times"],
    real: Float[ArrayLike, "batch times data"],
    *,
    key: PRNGKeyArray,
) -> Float[Array, ""]:
    r"""The Wasserstein GAN objective on one batch: $\mathbb E[D(\hat Y)] - \mathbb E[D(Y)]$.

    $\hat Y$ are as many generated paths as real ones (one key each, split from `key`), $Y$
    the real paths, all sampled at `ts`. The generator minimizes it and the discriminator
    maximizes it: with $D$ Lipschitz, its maximum over $D$ is the Wasserstein-1 distance
    between the path laws (Kantorovich–Rubinstein).

    **Arguments:**

    - `generator`: `generator(None, ts, key=k)` gives one path `(times, data)`.
    - `discriminator`: `discriminator((ts, path))` gives a scalar.
    - `ts`: the sample times, shape `(times,)`.
    - `real`: the real paths, shape `(batch, times, data)`.
    - `key`: the generator's randomness.

    References: Arjovsky, Chintala, Bottou, "Wasserstein GAN", ICML 2017; Kidger et al.,
    ICML 2021, Eq. (4).
    """
    ts, real = jnp.asarray(ts), jnp.asarray(real)
    if ts.ndim != 1 or real.ndim != 3 or real.shape[1] != ts.shape[0]:
        raise ValueError(
            f"wasserstein_loss: `real` must have shape (batch, len(ts), data) and `ts` shape "
            f"(times,), got {real.shape} and {ts.shape}. Add a channel axis with "
            "`real[..., None]` for scalar paths."
        )
    keys = jr.split(key, real.shape[0])
    fake = jax.vmap(lambda k: generator(None, ts, key=k))(keys)
    score = jax.vmap(lambda ys: discriminator((ts, ys)))
    return jnp.mean(score(fake)) - jnp.mean(score(real))


GANStep = Callable[..., tuple[Any, Any, Any, Any, Array]]


def make_gan_step(
    generator_optim: optax.GradientTransformation,
    discriminator_optim: optax.GradientTransformation,
) -> GANStep:
    r"""A jitted step of the SDE-GAN game, both players at once.

    One backward pass through `wasserstein_loss` gives both gradients; the generator descends,
    the discriminator ascends (its gradient is negated), then `clip_discriminator` is applied.
    Initialize the states with `neurde.init_optimizer(optim, network)`.

    **Arguments:**

    - `generator_optim`, `discriminator_optim`: Optax transformations (the paper uses Adadelta;
      small learning rates with RMSProp or Adam also work). A discriminator learning rate a
      few times the generator's (two timescales, as the paper's 1e-3 and 2e-4) steadies the
      game: `neurde run stochastic --only sde_gan` uses Adam with 4e-3 and 1e-3.

    **Returns:**

    `step(generator, discriminator, g_state, d_state, ts, real, key) -> (generator,
    discriminator, g_state, d_state, loss)`.

    References: Kidger, Foster, Li, Lyons, "Neural SDEs as Infinite-Dimensional GANs", ICML
    2021, Section 4 and Appendix; Diffrax's `neural_sde` example (simultaneous updates);
    Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter, "GANs Trained by a Two Time-Scale
    Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017.
    """

    for name, optim in (
        ("generator_optim", generator_optim),
        ("discriminator_optim", discriminator_optim),
    ):
        if not isinstance(optim, optax.GradientTransformation):
            raise TypeError(
                f"make_gan_step: `{name}` must be an Optax transformation (e.g. "
                f"`optax.adadelta(1.0)`), got {type(optim).__name__}."
            )

    def step(generator, discriminator, g_state, d_state, ts, real, key):
        nets = (generator, discriminator)
        params, static = eqx.partition(nets, trainable(nets))

        def loss_of(p):
            g, d = eqx.combine(p, static)
            return wasserstein_loss(g, d, ts, real, key=key)

        loss, (g_grad, d_grad) = jax.value_and_grad(loss_of)(params)
        d_grad = jax.tree.map(jnp.negative, d_grad)
        g_updates, g_state = generator_optim.update(g_grad, g_state, params[0])
        d_updates, d_state = discriminator_optim.update(d_grad, d_state, params[1])
        generator = eqx.apply_updates(generator, g_updates)
        discriminator = clip_discriminator(eqx.apply_updates(discriminator, d_updates))
        return generator, discriminator, g_state, d_state, loss

    return eqx.filter_jit(step)


__all__ = [
    "CDEDiscriminator",
    "SDEGenerator",
    "clip_discriminator",
    "lipswish",
    "make_gan_step",
    "wasserstein_loss",
]
