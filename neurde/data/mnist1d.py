"""MNIST-1D: procedurally generated 1D digits (Greydanus 2020, "Scaling down deep learning")."""

import numpy as np

from . import _checks
from .classification import Classification

# The ten digit glyphs of the paper, 12 samples each. They are data, not tuning knobs.
_GLYPHS = (
    (5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5),
    (5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5),
    (5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5),
    (5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5),
    (5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5),
    (5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5),
    (5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5),
    (5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5),
)
_TEMPLATE = 12
_PADDING = (36, 60)
_WINDOW = _TEMPLATE + _PADDING[1]
_AMPLITUDE = 0.4
_MAX_TRANSLATION = 48
_CORR_NOISE = 0.25
_CORR_SIGMA = 2.0
_IID_NOISE = 0.02
_SHEAR = 0.75


def mnist1d(
    *,
    num_samples: int = 5000,
    train_split: float = 0.8,
    length: int = 40,
    seed: int = 42,
    channels: bool = True,
) -> Classification:
    r"""MNIST-1D: ten 1D digit glyphs, randomly stretched, shifted, sheared and noised.

    A small benchmark that separates models far better than MNIST: the paper reports test
    accuracies of about 32% for logistic regression, 68% for an MLP and 94% for a CNN.
    Each example is generated in NumPy as in the published reference code:

    1. **Template.** One of ten 12-sample glyphs, standardized (zero mean, unit standard
       deviation), shifted to start at 0 (all glyphs also end at 0) and divided by 6.
    2. **Pad and stretch.** $p \sim U\{36, \dots, 60\}$ zeros are appended on the right
       and the $12 + p$ samples are linearly resampled to a window of 72, so the glyph
       covers between 12 and 18 samples: a random scaling of the time axis.
    3. **Amplitude.** Multiplied by $1 + 0.4\,(u - 1/2)$, $u \sim U(0, 1)$.
    4. **Translate.** Shifted circularly by $k \sim U\{0, \dots, 47\}$ samples.
    5. **Correlated noise.** Outside the glyph, the zeros are replaced by white noise of
       standard deviation 0.25 smoothed with a Gaussian filter of width 2 samples
       (radius 8, reflecting boundaries).
    6. **iid noise** of standard deviation 0.02 is added everywhere.
    7. **Shear.** A ramp $c\,s$ with $s$ = `linspace(-1/2, 1/2, 72)` and
       $c = 0.75\,(u - 1/2)$ is subtracted.
    8. **Resample** linearly to `length` samples (40 in the paper).

    Then the whole data set, train and test together, is standardized to zero mean and unit
    standard deviation, as in the reference, and the first `round(train_split *
    num_samples)` examples (in random order) form the training set. Every class has
    `num_samples / 10` examples in total; the train/test split is not stratified.

    Deviations from the reference code: randomness is a `numpy.random.default_rng(seed)`
    Generator drawing all examples at once, so the numbers differ from the reference's
    seed-42 file (the distribution is the same); the glyph's support is tracked exactly
    instead of adding `1e-8` to the glyph and testing for non-zero values (a 1e-8 change
    in values); the time grid `linspace(-5, 5, 12) / 6` the reference carries as metadata
    is not returned. Generating the 5000 default examples takes a few milliseconds.

    **Arguments:**

    - `num_samples`: the number of examples, a positive multiple of 10.
    - `train_split`: the share of examples in the training set, strictly between 0 and 1.
    - `length`: the number of samples per example, at least 12 (the glyph length).
    - `seed`: a non-negative integer seed; the data are deterministic for a seed.
    - `channels`: if `True` each example has shape `(1, length)`, channel-first for a 1D
      convolution; if `False` shape `(length,)`.

    **Returns:**

    [`neurde.data.Classification`][] with float32 inputs, int32 labels, `num_classes=10` and
    `name="mnist1d"`.

    References:
        Greydanus. "Scaling down Deep Learning". arXiv:2011.14439, 2020.
        https://github.com/greydanus/mnist1d.
    """
    fn = "mnist1d"
    num_samples = _checks.count(fn, "num_samples", num_samples, 10)
    if num_samples % 10:
        raise ValueError(
            f"`{fn}(num_samples={num_samples})`: `num_samples` must be a multiple of 10, so "
            f"that the ten classes are the same size. Pass e.g. "
            f"`num_samples={10 * round(num_samples / 10)}`."
        )
    train_split = _checks.number(fn, "train_split", train_split)
    if not 0 < train_split < 1:
        raise ValueError(
            f"`{fn}(train_split={train_split!r})`: `train_split` must lie strictly between "
            "0 and 1. Pass e.g. `train_split=0.8` for an 80/20 split."
        )
    n_train = round(train_split * num_samples)
    if n_train in (0, num_samples):
        raise ValueError(
            f"`{fn}(num_samples={num_samples}, train_split={train_split!r})` puts "
            f"{n_train} examples in train and {num_samples - n_train} in test; both must be "
            "non-empty. Pass a `train_split` closer to 0.5 or more samples."
        )
    length = _checks.count(fn, "length", length, _TEMPLATE)
    seed = _checks.count(fn, "seed", seed, 0)
    if not isinstance(channels, bool):
        raise TypeError(
            f"`{fn}(channels={channels!r})`: `channels` must be `True` (shape (1, length)) "
            "or `False` (shape (length,))."
        )

    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(10, dtype=np.int32), num_samples // 10))
    x = _examples(y, length, rng)
    x = ((x - x.mean()) / x.std()).astype(np.float32)
    if channels:
        x = x[:, None]
    return Classification(
        x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=10, name="mnist1d"
    )


def _templates() -> np.ndarray:
    glyphs = np.asarray(_GLYPHS, dtype=np.float64)
    glyphs = (glyphs - glyphs.mean(1, keepdims=True)) / glyphs.std(1, keepdims=True)
    return (glyphs - glyphs[:, :1]) / 6


def _examples(labels: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    padded = np.zeros((n, _WINDOW))
    padded[:, :_TEMPLATE] = _templates()[labels]
    valid = _TEMPLATE + rng.integers(_PADDING[0], _PADDING[1] + 1, n)
    x, position = _resample(padded, valid, _WINDOW)
    # A window sample belongs to the glyph when its interpolation stencil touches the glyph.
    in_glyph = position < _TEMPLATE
    x *= 1 + _AMPLITUDE * (rng.random((n, 1)) - 0.5)
    shift = rng.integers(0, _MAX_TRANSLATION, n)
    index = (np.arange(_WINDOW) - shift[:, None]) % _WINDOW
    x = np.take_along_axis(x, index, 1)
    in_glyph = np.take_along_axis(in_glyph, index, 1)
    noise = _smooth(_CORR_NOISE * rng.standard_normal((n, _WINDOW)), _CORR_SIGMA)
    x = np.where(in_glyph, x, noise) + _IID_NOISE * rng.standard_normal((n, _WINDOW))
    x -= _SHEAR * (rng.random((n, 1)) - 0.5) * np.linspace(-0.5, 0.5, _WINDOW)
    return _resample(x, np.full(n, _WINDOW), length)[0]


def _resample(x: np.ndarray, valid: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Linearly resample the first `valid[i]` entries of each row `i` to `size` points.

    Returns the resampled rows and the fractional source position of every output point.
    """
    position = np.linspace(0, 1, size) * (valid[:, None] - 1)
    left = np.minimum(np.floor(position).astype(np.int64), valid[:, None] - 2)
    weight = position - left
    x_left = np.take_along_axis(x, left, 1)
    x_right = np.take_along_axis(x, left + 1, 1)
    return (1 - weight) * x_left + weight * x_right, position


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter along the last axis, truncated at 4 sigma, reflecting at the ends.

    The same filter as `scipy.ndimage.gaussian_filter1d(x, sigma)`, without needing SciPy.
    """
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    padded = np.pad(x, ((0, 0), (radius, radius)), mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=1)
    return windows @ (weights / weights.sum())
