r"""SDE-Net: a classifier whose hidden state follows an SDE, with a diffusion net for OOD inputs."""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._types import Args, MaybeKey, SaveTimes
from .._validation import is_concrete, require_key
from ..fields import AbstractField, MLPField, as_field
from ..model import AbstractContinuousModel, AbstractWrapper
from ..sde import NeuralSDE
from ..solution import ModelSolution

# Tag of `jr.fold_in(key, tag)` for the noise that makes out-of-distribution inputs in
# `sde_net_diffusion_loss`; the Brownian motion uses the key itself.
_OOD_KEY = 104


class SDENetArgs(eqx.Module):
    r"""What the fields of an SDE-Net's SDE read besides the state.

    **Fields:**

    - `diffusion`: the diffusion $\sigma_{\max}\,\mathrm{sigmoid}(g(h_0))$, a scalar fixed
      by the initial hidden state.
    - `args`: the user's `args`, passed on to the drift.
    """

    diffusion: Float[Array, ""]
    args: Any = None


class SDENetDrift(AbstractField):
    """The drift of an SDE-Net's SDE: the user's field, called with the user's `args`."""

    field: AbstractField

    def __init__(self, field: Any):
        self.field = as_field(field)

    def __call__(self, t: Any, y: Array, args: Any) -> Array:
        return self.field(t, y, _unpack("SDENetDrift", args).args)


class SDENetDiffusion(AbstractField):
    r"""The diffusion of an SDE-Net's SDE: $\sigma(h_0)$ on every coordinate, whatever $h_t$."""

    def __call__(self, t: Any, y: Array, args: Any) -> Array:
        del t
        return jnp.broadcast_to(_unpack("SDENetDiffusion", args).diffusion, y.shape).astype(y.dtype)


def _unpack(owner: str, args: Any) -> SDENetArgs:
    if not isinstance(args, SDENetArgs):
        raise TypeError(
            f"{owner}: `args` must be a `neurde.stochastic.SDENetArgs` (the diffusion read "
            f"from the initial hidden state), got {type(args).__name__}. Call the `SDENet` "
            "on an input instead of its inner SDE."
        )
    return args


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"SDENet: `{name}` must be a positive integer, got {value!r}.")


class SDENet(AbstractWrapper):
    r"""SDE-Net (Kong, Sun, Zhang 2020): a classifier whose hidden state follows an SDE.

    A downsampling layer maps the input $x$ to the initial hidden state $h_0 = D(x)$; the
    state follows

    $$dh_t = f(t, h_t)\,dt + \sigma(h_0)\,dW_t, \qquad
      \sigma(h_0) = \sigma_{\max}\,\mathrm{sigmoid}\big(g(h_0)\big),$$

    on $[0, T]$, solved by Euler–Maruyama with `steps` constant steps, and a head gives the
    logits $\mathrm{Linear}(\mathrm{ReLU}(h_T))$. The drift net $f$ fits the prediction;
    the diffusion net $g$ reads the initial state and outputs one number, the same on every
    coordinate of $W$. It is trained to be small on the training distribution and large
    out of it (`sde_net_diffusion_loss`), so that an out-of-distribution input is carried
    by the noise and its Monte Carlo predictive over Brownian paths spreads
    (`sde_net_uncertainty`).

    It is a `neurde.AbstractWrapper` around its SDE, a `neurde.NeuralSDE` held as `model`
    (drift an `SDENetDrift`, diffusion an `SDENetDiffusion`, args an `SDENetArgs`):
    `sdenet(x, *, key)` returns the logits of one input (a vector of `input_size`) along
    one Brownian path drawn from `key` (on the step grid: a fast `lax.scan`), and
    `sdenet.solve(x, ...)` also reports $\sigma(h_0)$ as `extras["diffusion"]`. In inference
    mode (`eqx.nn.inference_mode`) the noise is dropped: the deterministic drift-only net,
    no key needed.

    **Arguments:**

    - `input_size`, `num_classes`: the input dimension and the number of classes.
    - `hidden_size`: the dimension of $h$.
    - `width_size`: the hidden width of the default drift and diffusion nets.
    - `sigma_max`: $\sigma_{\max} > 0$, the largest diffusion.
    - `t1`, `steps`: the interval $[0, T]$ and the number of Euler–Maruyama steps
      (default $T = 4$ in 4 steps, as the paper's fully connected SDE-Net).
    - `drift`: $f(t, h, \text{args})$; default an `MLPField(hidden_size, width_size, 1,
      time_dependent=True)` with ReLU units (the paper's nets read $t$ and use ReLU).
    - `diffusion_net`: $h_0 \mapsto g(h_0)$, a scalar logit; default an `eqx.nn.MLP` with one
      hidden layer of `width_size` ReLU units (the paper's fully connected diffusion net;
      the sigmoid is applied by the model, so the loss can work on logits).
    - `key`: initialization key.
    - `sde_kwargs`: further settings of the `neurde.NeuralSDE` (`solver`, `adjoint`, ...).

    References: Kong, Sun, Zhang, "SDE-Net: Equipping Deep Neural Networks with Uncertainty
    Estimates", ICML 2020, Eq. (5)–(9); the authors' code (github.com/Lingkai-Kong/SDE-Net,
    `YearMSD/models/sdenet.py` for the fully connected nets).
    """

    downsample: eqx.nn.Linear
    diffusion_net: Callable[[Array], Array]
    model: AbstractContinuousModel
    head: eqx.nn.Linear
    input_size: int = eqx.field(static=True)
    sigma_max: float = eqx.field(static=True)
    inference: bool = False

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        hidden_size: int = 64,
        *,
        width_size: int = 64,
        sigma_max: float = 1.0,
        t1: float = 4.0,
        steps: int = 4,
        drift: AbstractField | Callable[..., Any] | None = None,
        diffusion_net: Callable[[Array], Array] | None = None,
        inference: bool = False,
        key: PRNGKeyArray,
        **sde_kwargs: Any,
    ):
        sizes = dict(input_size=input_size, num_classes=num_classes, hidden_size=hidden_size)
        for name, value in {**sizes, "width_size": width_size, "steps": steps}.items():
            _positive_int(name, value)
        if isinstance(sigma_max, bool) or not (
            isinstance(sigma_max, int | float) and sigma_max > 0
        ):
            raise ValueError(
                f"SDENet: `sigma_max` must be a number > 0 (the largest diffusion), got "
                f"{sigma_max!r}. For the drift-only net use `eqx.nn.inference_mode(model)`."
            )
        if not (isinstance(t1, int | float) and t1 > 0):
            raise ValueError(f"SDENet: `t1` must be a number > 0, got {t1!r}.")
        dkey, fkey, gkey, hkey = jr.split(key, 4)
        if drift is None:
            drift = MLPField(
                hidden_size, width_size, 1, time_dependent=True, activation=jax.nn.relu, key=fkey
            )
        if diffusion_net is None:
            diffusion_net = eqx.nn.MLP(
                hidden_size, "scalar", width_size, 1, activation=jax.nn.relu, key=gkey
            )
        self.downsample = eqx.nn.Linear(input_size, hidden_size, key=dkey)
        self.diffusion_net = diffusion_net
        self.model = NeuralSDE(
            SDENetDrift(drift),
            SDENetDiffusion(),
            **{"t0": 0.0, "t1": float(t1), "dt0": float(t1) / steps, **sde_kwargs},
        )
        self.head = eqx.nn.Linear(hidden_size, num_classes, key=hkey)
        self.input_size = input_size
        self.sigma_max = float(sigma_max)
        self.inference = inference

    def __check_init__(self):
        if not isinstance(self.model, AbstractContinuousModel):
            raise TypeError(
                f"SDENet: `model` must be a continuous neurde model (the NeuralSDE of the "
                f"hidden state, possibly wrapped by transforms), got {type(self.model).__name__}."
            )
        if not callable(self.diffusion_net):
            raise TypeError(
                f"SDENet: `diffusion_net` must be a function of the initial hidden state, got "
                f"{type(self.diffusion_net).__name__}."
            )

    def initial_state(self, x: Float[Array, " d"]) -> Float[Array, " h"]:
        """The initial hidden state $h_0 = D(x)$ of one input."""
        x = jnp.asarray(x)
        if x.shape != (self.input_size,):
            raise ValueError(
                f"SDENet: the input `y0` has shape {x.shape}, but the model was built with "
                f"`input_size={self.input_size}`. Pass one flat example of shape "
                f"({self.input_size},) (e.g. `x.reshape(-1)`), and vmap over a batch."
            )
        return self.downsample(x)

    def diffusion_logit(self, h0: Float[Array, " h"]) -> Float[Array, ""]:
        r"""The diffusion net's logit $g(h_0)$: $\sigma(h_0) = \sigma_{\max}\,\mathrm{sigmoid}$
        of it."""
        logit = jnp.asarray(self.diffusion_net(h0))
        if logit.shape != ():
            raise ValueError(
                f"SDENet: `diffusion_net` must return a scalar logit, got shape {logit.shape}. "
                "Build it with out_size='scalar'."
            )
        return logit

    def solve(
        self, y0: Any, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Logits of one input along one Brownian path (at the hidden state's save times
        `ts`, if given); `extras["diffusion"]` is $\\sigma(h_0)$. See
        `neurde.AbstractModel.solve`."""
        if y0 is None:
            raise ValueError("SDENet: the input `y0` is missing. Pass one flat example.")
        if not self.inference:
            key = require_key(
                "SDENet",
                key,
                "sample the Brownian motion of the hidden state",
                "For the drift-only net use `eqx.nn.inference_mode(model)`.",
            )
        h0 = self.initial_state(y0)
        sigma = self.sigma_max * jax.nn.sigmoid(self.diffusion_logit(h0))
        solution = self.model.solve(h0, ts, args=SDENetArgs(sigma, args), key=key)
        solution = dataclasses.replace(solution, extras={**solution.extras, "diffusion": sigma})
        return solution.map(lambda h: self.head(jax.nn.relu(h)))


def _frozen(module: Any) -> Any:
    return jax.tree.map(lambda x: jax.lax.stop_gradient(x) if eqx.is_array(x) else x, module)


def sde_net_task_loss(
    model: SDENet,
    x: Float[Array, " d"],
    label: Int[ArrayLike, ""],
    *,
    key: MaybeKey,
    args: Args = None,
) -> Float[Array, ""]:
    r"""The task loss of one labelled input: cross-entropy of the logits along one path.

    $$\mathcal L_{\text{task}} = -\log \mathrm{softmax}\big(\mathrm{head}(h_T)\big)_y,\quad
      dh = f\,dt + \sigma(h_0)\,dW,\ h_0 = D(x).$$

    It trains the downsampling layer, the drift and the head; the diffusion net is held
    fixed (its gradient is stopped), as the paper's first optimizer holds only those three.

    **Arguments:**

    - `model`: the `SDENet`; `x`: one input; `label`: its class.
    - `key`: the Brownian motion (`None` only in inference mode).
    - `args`: passed to the drift.

    References: Kong, Sun, Zhang, ICML 2020, Eq. (9), first term.
    """
    model = eqx.tree_at(lambda m: m.diffusion_net, model, _frozen(model.diffusion_net))
    logits = model(x, args=args, key=key)
    label = jnp.asarray(label)
    if not jnp.issubdtype(label.dtype, jnp.integer):
        raise TypeError(
            f"sde_net_task_loss: `label` must be an integer class index, got dtype {label.dtype}."
        )
    classes = logits.shape[-1]
    message = f"sde_net_task_loss: `label` must lie in [0, {classes}) (the model's classes)"
    if is_concrete(label):
        if not bool(jnp.all((label >= 0) & (label < classes))):
            raise ValueError(f"{message}, got {label!r}.")
    else:
        label = eqx.error_if(label, (label < 0) | (label >= classes), f"{message}.")
    return optax.softmax_cross_entropy_with_integer_labels(logits, label)


def sde_net_diffusion_loss(
    model: SDENet, x: Float[Array, " d"], *, key: PRNGKeyArray, ood_std: float = 2.0
) -> Float[Array, ""]:
    r"""The diffusion net's loss on one input: binary cross-entropy, in-distribution 0, out 1.

    $$\mathcal L_{\text{diff}} = -\log\big(1 - s(g(h_0))\big) - \log s\big(g(\tilde h_0)\big),
      \quad h_0 = D(x),\ \tilde h_0 = D(x + \text{ood\_std}\cdot\varepsilon),\
      \varepsilon \sim \mathcal N(0, I),$$

    with $s$ the sigmoid: the diffusion is pushed to 0 on the training input and to
    $\sigma_{\max}$ on an out-of-distribution input made, as in the paper's code, by adding
    Gaussian noise to it (2 standard deviations on standardized inputs). It trains the
    diffusion net only (the initial states are held fixed), as the paper's second optimizer.

    **Arguments:**

    - `model`: the `SDENet`; `x`: one training input.
    - `key`: the noise of the out-of-distribution input (`jr.fold_in(key, 104)`).
    - `ood_std`: its standard deviation, in the input's units.

    References: Kong, Sun, Zhang, ICML 2020, Eq. (9), second and third terms; the authors'
    `sdenet_mnist.py` (`inputs_out = 2 * randn + inputs`, `BCELoss`).
    """
    if not (isinstance(ood_std, int | float) and ood_std > 0):
        raise ValueError(
            f"sde_net_diffusion_loss: `ood_std` must be a number > 0, got {ood_std!r}."
        )
    x = jnp.asarray(x)
    noise = jr.normal(jr.fold_in(key, _OOD_KEY), x.shape, x.dtype)
    h_in = jax.lax.stop_gradient(model.initial_state(x))
    h_out = jax.lax.stop_gradient(model.initial_state(x + ood_std * noise))
    logit_in, logit_out = model.diffusion_logit(h_in), model.diffusion_logit(h_out)
    loss_in = optax.sigmoid_binary_cross_entropy(logit_in, jnp.zeros_like(logit_in))
    loss_out = optax.sigmoid_binary_cross_entropy(logit_out, jnp.ones_like(logit_out))
    return loss_in + loss_out


def sde_net_loss(
    model: SDENet,
    batch: tuple[Float[Array, "batch d"], Int[Array, " batch"]],
    key: PRNGKeyArray,
    *,
    ood_std: float = 2.0,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    r"""The SDE-Net objective on a batch `(x, labels)`, ready for `neurde.fit`.

    The mean task loss plus the mean diffusion loss. The two act on disjoint parameters
    (downsampling, drift and head; diffusion net), so one gradient step on the sum takes
    the paper's two alternating steps at once, except that the diffusion net reads the
    initial states before, not after, this step's update of the downsampling layer. Give
    the two parts their own learning rates with `optax.multi_transform` if wanted (the
    paper uses SGD with 0.1 and 0.01).

    **Arguments:**

    - `model`: the `SDENet`; `batch`: inputs `(batch, d)` and integer labels `(batch,)`.
    - `key`: one key per example is split from it (the Brownian motion, and the noise of
      the out-of-distribution input).
    - `ood_std`: see `sde_net_diffusion_loss`.

    **Returns:**

    `(loss, {"task": ..., "diffusion": ...})`.
    """
    xs, labels = batch
    keys = jr.split(key, jnp.shape(xs)[0])
    task = jax.vmap(lambda x, y, k: sde_net_task_loss(model, x, y, key=k))(xs, labels, keys)
    diffusion = jax.vmap(lambda x, k: sde_net_diffusion_loss(model, x, key=k, ood_std=ood_std))(
        xs, keys
    )
    task, diffusion = jnp.mean(task), jnp.mean(diffusion)
    return task + diffusion, {"task": task, "diffusion": diffusion}


class SDENetUncertainty(NamedTuple):
    """What `sde_net_uncertainty` returns for one input.

    - `probs`: the Monte Carlo predictive $\\bar p = \\frac1S\\sum_s \\mathrm{softmax}(\\ell_s)$.
    - `confidence`: $\\max_k \\bar p_k$, the paper's score (low out of distribution).
    - `entropy`: $-\\sum_k \\bar p_k \\log \\bar p_k$ of the predictive.
    - `variance`: $\\sum_k \\mathrm{Var}_s\\, \\mathrm{softmax}(\\ell_s)_k$, the spread over paths.
    - `diffusion`: $\\sigma(h_0)$, the diffusion net's own reading.
    """

    probs: Float[Array, " k"]
    confidence: Float[Array, ""]
    entropy: Float[Array, ""]
    variance: Float[Array, ""]
    diffusion: Float[Array, ""]


def sde_net_uncertainty(
    model: SDENet, x: Float[Array, " d"], *, key: MaybeKey, samples: int = 10, args: Args = None
) -> SDENetUncertainty:
    r"""The predictive of one input over `samples` Brownian paths, and its uncertainty.

    $\bar p = \frac1S \sum_{s=1}^S \mathrm{softmax}(\ell_s)$ with $\ell_s$ the logits along
    path $s$ (keys split from `key`). The paper scores out-of-distribution detection by the
    confidence $\max_k \bar p_k$ (10 paths); the entropy, the variance over paths and the
    diffusion $\sigma(h_0)$ are other readings. Batch with `jax.vmap`.

    **Arguments:**

    - `model`: the `SDENet`; `x`: one input.
    - `key`: the paths' randomness (`None` only in inference mode: one deterministic pass).
    - `samples`: the number of paths $S \ge 1$.
    - `args`: passed to the drift.

    **Returns:**

    An `SDENetUncertainty`.

    References: Kong, Sun, Zhang, ICML 2020, Section 5; the authors' `test_detection.py`.
    """
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(
            f"sde_net_uncertainty: `samples` must be a positive integer, got {samples!r}."
        )
    if key is None and not model.inference:
        require_key(
            "sde_net_uncertainty",
            key,
            "sample the Brownian paths",
            "For the drift-only net use `eqx.nn.inference_mode(model)`.",
        )
    if key is None:
        solution = model.solve(x, args=args)
        logits, diffusion = solution.ys[None], solution.extras["diffusion"]
    else:
        solution = jax.vmap(lambda k: model.solve(x, args=args, key=k))(jr.split(key, samples))
        logits, diffusion = solution.ys, solution.extras["diffusion"][0]
    p = jax.nn.softmax(logits, axis=-1)
    probs = jnp.mean(p, axis=0)
    entropy = -jnp.sum(probs * jnp.log(jnp.clip(probs, jnp.finfo(probs.dtype).tiny)))
    variance = jnp.sum(jnp.var(p, axis=0))
    return SDENetUncertainty(probs, jnp.max(probs), entropy, variance, diffusion)


__all__ = [
    "SDENet",
    "SDENetArgs",
    "SDENetDiffusion",
    "SDENetDrift",
    "SDENetUncertainty",
    "sde_net_diffusion_loss",
    "sde_net_loss",
    "sde_net_task_loss",
    "sde_net_uncertainty",
]
