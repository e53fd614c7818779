"""The 8x8 handwritten digits of scikit-learn (the UCI optical digits test set)."""

import numpy as np

from . import _checks
from .classification import Classification


def digits(*, test_fraction: float = 0.25, image: bool = True, seed: int = 0) -> Classification:
    """The 1797 8x8 handwritten digits shipped with scikit-learn, split into train and test.

    Loads `sklearn.datasets.load_digits` (bundled with scikit-learn; nothing is downloaded).
    Pixels are counts in `0, ..., 16` and are divided by 16, so inputs lie in [0, 1]. The
    ten classes hold 174 to 183 examples each.

    The split is stratified: `numpy.random.default_rng(seed)` (a NumPy `Generator`)
    permutes the examples of each class and puts `round(test_fraction * n_c)` of the `n_c`
    examples of class `c` in the test set and the rest in the training set; both sets are
    then shuffled by the same generator. The split is deterministic for a `seed`. With the
    default `test_fraction=0.25` there are 1347 training and 450 test examples.

    Needs scikit-learn, imported only when `digits` is called.

    **Arguments:**

    - `test_fraction`: the share of each class put in the test set, strictly between 0 and 1.
    - `image`: if `True` each example is a channel-first image of shape `(1, 8, 8)`, ready
      for a convolution; if `False` a flat vector of shape `(64,)`.
    - `seed`: a non-negative integer seed for the split.

    **Returns:**

    [`neurde.data.Classification`][] with float32 inputs, int32 labels, `num_classes=10` and
    `name="digits"`.

    References:
        Alpaydin, Kaynak. "Optical Recognition of Handwritten Digits". UCI Machine Learning
        Repository, 1998. https://doi.org/10.24432/C50P49.
    """
    fn = "digits"
    test_fraction = _checks.number(fn, "test_fraction", test_fraction)
    if not 0 < test_fraction < 1:
        raise ValueError(
            f"`{fn}(test_fraction={test_fraction!r})`: `test_fraction` must lie strictly "
            "between 0 and 1. Pass e.g. `test_fraction=0.25` for a 75/25 split."
        )
    if not isinstance(image, bool):
        raise TypeError(
            f"`{fn}(image={image!r})`: `image` must be `True` (shape (1, 8, 8)) or `False` "
            "(shape (64,))."
        )
    seed = _checks.count(fn, "seed", seed, 0)
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "`neurde.data.digits` needs scikit-learn, which ships the data set. Install it "
            "with `pip install scikit-learn` (or `pip install 'neurde[experiments]'`)."
        ) from error

    pixels, labels = load_digits(return_X_y=True)
    x = (np.asarray(pixels, np.float32) / 16).reshape((-1, 1, 8, 8) if image else (-1, 64))
    y = np.asarray(labels, np.int32)
    train, test = _stratified_split(y, test_fraction, np.random.default_rng(seed))
    if len(test) == 0 or len(train) == 0:
        raise ValueError(
            f"`{fn}(test_fraction={test_fraction!r})` leaves the "
            f"{'test' if len(test) == 0 else 'training'} set empty (the smallest class has "
            f"{np.bincount(y).min()} examples). Pass a `test_fraction` closer to 0.5."
        )
    return Classification(x[train], y[train], x[test], y[test], num_classes=10, name="digits")


def _stratified_split(
    y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    train, test = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = round(test_fraction * len(members))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
