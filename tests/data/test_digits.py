import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neurde.data import Classification, digits

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def data():
    return digits()


def _rows(x):
    return {row.tobytes() for row in np.asarray(x).reshape(len(x), -1)}


def _nearest_centroid_accuracy(data):
    x_train = np.asarray(data.x_train).reshape(len(data.x_train), -1)
    x_test = np.asarray(data.x_test).reshape(len(data.x_test), -1)
    y_train, y_test = np.asarray(data.y_train), np.asarray(data.y_test)
    centroids = np.stack([x_train[y_train == c].mean(0) for c in range(data.num_classes)])
    distances = ((x_test[:, None] - centroids) ** 2).sum(-1)
    return float((distances.argmin(1) == y_test).mean())


def test_shapes_dtypes_and_pixel_range(data):
    assert isinstance(data, Classification)
    assert (data.name, data.num_classes, data.input_shape) == ("digits", 10, (1, 8, 8))
    assert data.x_train.shape == (1347, 1, 8, 8) and data.x_test.shape == (450, 1, 8, 8)
    assert data.x_train.dtype == jnp.float32 and data.y_train.dtype == jnp.int32
    x = np.concatenate([data.x_train, data.x_test])
    assert len(x) == 1797
    assert x.min() == 0 and x.max() == 1
    # Raw pixels are counts 0..16, so every scaled value is an exact multiple of 1/16.
    np.testing.assert_array_equal(x * 16, np.round(x * 16))


def test_same_examples_as_scikit_learn(data):
    raw = sklearn_datasets.load_digits()
    expected = {
        (row / 16).astype(np.float32).tobytes() + bytes([label])
        for row, label in zip(raw.data, raw.target, strict=True)
    }
    got = {
        row.reshape(-1).tobytes() + bytes([int(label)])
        for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test))
        for row, label in zip(np.asarray(x), np.asarray(y), strict=True)
    }
    # The 1797 images are distinct, so the split is a partition of them with labels kept.
    assert got == expected and len(got) == 1797


def test_flat_inputs_are_the_images_flattened():
    flat, image = digits(image=False, seed=3), digits(image=True, seed=3)
    assert flat.input_shape == (64,)
    np.testing.assert_array_equal(flat.x_train, np.asarray(image.x_train).reshape(-1, 64))
    np.testing.assert_array_equal(flat.y_test, image.y_test)


def test_split_is_stratified_and_disjoint(data):
    train_counts = np.bincount(np.asarray(data.y_train), minlength=10)
    test_counts = np.bincount(np.asarray(data.y_test), minlength=10)
    totals = train_counts + test_counts
    # Roughly uniform classes: 174 to 183 of each digit.
    assert totals.min() >= 174 and totals.max() <= 183
    assert np.all(np.abs(test_counts - 0.25 * totals) <= 0.5)
    assert not _rows(data.x_train) & _rows(data.x_test)
    # Both sets are shuffled, not sorted by class.
    assert np.any(np.diff(np.asarray(data.y_train)) < 0)
    assert np.any(np.diff(np.asarray(data.y_test)) < 0)


def test_split_deterministic_for_a_seed():
    a, b, c = digits(seed=7), digits(seed=7), digits(seed=8)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert _rows(a.x_test) != _rows(c.x_test)


def test_test_fraction():
    data = digits(test_fraction=0.5)
    assert abs(len(data.y_test) - 1797 / 2) <= 5


def test_nearest_centroid_baseline():
    # A sanity anchor: nearest class mean on raw pixels gets 88-92% for seeds 0-2.
    for seed in range(3):
        assert _nearest_centroid_accuracy(digits(seed=seed)) > 0.85


def test_is_a_pytree(data):
    leaves = jax.tree_util.tree_leaves(data)
    assert len(leaves) == 4
    doubled = jax.jit(lambda d: jax.tree_util.tree_map(lambda x: 2 * x, d))(data)
    np.testing.assert_array_equal(doubled.x_test, 2 * data.x_test)
    assert doubled.num_classes == 10 and doubled.name == "digits"


@pytest.mark.parametrize("test_fraction", [0.0, 1.0, -0.25, 1.5])
def test_bad_test_fraction(test_fraction):
    with pytest.raises(ValueError, match="`test_fraction` must lie strictly between 0 and 1"):
        digits(test_fraction=test_fraction)


def test_bad_arguments():
    with pytest.raises(ValueError, match="leaves the test set empty"):
        digits(test_fraction=0.001)
    with pytest.raises(ValueError, match="leaves the training set empty"):
        digits(test_fraction=0.999)
    with pytest.raises(ValueError, match="`seed` must be >= 0, got -1"):
        digits(seed=-1)
    with pytest.raises(TypeError, match="`seed` must be a Python integer"):
        digits(seed=1.5)
    with pytest.raises(TypeError, match="`image` must be `True`"):
        digits(image="yes")


def test_missing_scikit_learn(monkeypatch):
    # A `None` entry in `sys.modules` makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        digits()


def test_classification_checks():
    x, y = jnp.zeros((4, 3)), jnp.arange(4, dtype=jnp.int32)
    ok = Classification(x, y, x[:2], y[:2], num_classes=4, name="toy")
    assert ok.input_shape == (3,)
    with pytest.raises(TypeError, match="`x_train` must be floating, got int32"):
        Classification(y[:, None], y, x, y, num_classes=4, name="toy")
    with pytest.raises(TypeError, match="`y_test` must hold integer class labels, got float32"):
        Classification(x, y, x, x[:, 0], num_classes=4, name="toy")
    with pytest.raises(ValueError, match=r"got \(4, 3\) and \(3,\)"):
        Classification(x, y[:3], x, y, num_classes=4, name="toy")
    with pytest.raises(ValueError, match=r"must share a shape, got \(3,\) and \(2,\)"):
        Classification(x, y, x[:, :2], y, num_classes=4, name="toy")
    with pytest.raises(ValueError, match="`num_classes` must be >= 2"):
        Classification(x, y, x, y, num_classes=1, name="toy")
