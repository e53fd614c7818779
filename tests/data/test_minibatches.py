import itertools

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from neurde.data import minibatches


def _epochs(batches, n_batches, n_epochs):
    return [list(itertools.islice(batches, n_batches)) for _ in range(n_epochs)]


def test_each_epoch_visits_every_index_once():
    size, batch_size = 23, 5
    data = {"index": jnp.arange(size), "twice": np.arange(size) * 2.0}
    epochs = _epochs(minibatches(data, batch_size, key=jr.key(0)), size // batch_size, 4)
    orders = []
    for epoch in epochs:
        for batch in epoch:
            assert set(batch) == {"index", "twice"}
            assert batch["index"].shape == (batch_size,)
            assert isinstance(batch["twice"], np.ndarray)
            np.testing.assert_array_equal(batch["twice"], 2.0 * np.asarray(batch["index"]))
        order = np.concatenate([np.asarray(b["index"]) for b in epoch])
        # 20 distinct indices per epoch; the 3 left over are dropped.
        assert len(np.unique(order)) == 20 and order.min() >= 0 and order.max() < size
        orders.append(order)
    # A fresh permutation per epoch.
    assert not all(np.array_equal(orders[0], o) for o in orders[1:])


def test_exact_multiple_covers_everything():
    epochs = _epochs(minibatches(jnp.arange(12.0)[:, None], 4, key=jr.key(1)), 3, 2)
    for epoch in epochs:
        values = np.sort(np.concatenate([np.asarray(b)[:, 0] for b in epoch]))
        np.testing.assert_array_equal(values, np.arange(12.0))


def test_deterministic_for_a_key():
    data = (jnp.arange(10), jnp.arange(10) ** 2)
    a = list(itertools.islice(minibatches(data, 3, key=jr.key(2)), 9))
    b = list(itertools.islice(minibatches(data, 3, key=jr.key(2)), 9))
    c = list(itertools.islice(minibatches(data, 3, key=jr.key(3)), 9))
    for (a0, a1), (b0, b1) in zip(a, b, strict=True):
        np.testing.assert_array_equal(a0, b0)
        np.testing.assert_array_equal(a1, b1)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


def test_epoch_permutation_comes_from_fold_in():
    key = jr.key(4)
    batches = minibatches(jnp.arange(6), 6, key=key)
    for epoch in range(3):
        expected = jr.permutation(jr.fold_in(key, epoch), 6)
        np.testing.assert_array_equal(next(batches), expected)


def test_errors():
    with pytest.raises(ValueError, match="batch_size` must be >= 1, got 0"):
        minibatches(jnp.zeros((4, 2)), 0, key=jr.key(0))
    with pytest.raises(ValueError, match="batch_size` must be at most the number of examples, 4"):
        minibatches(jnp.zeros((4, 2)), 5, key=jr.key(0))
    with pytest.raises(
        ValueError, match=r"must share the leading axis, got leaf shapes \[\(4, 2\), \(3,\)\]"
    ):
        minibatches((jnp.zeros((4, 2)), jnp.zeros(3)), 2, key=jr.key(0))
    with pytest.raises(ValueError, match="is empty"):
        minibatches(jnp.zeros((0, 3)), 1, key=jr.key(0))
    with pytest.raises(ValueError, match="has no array leaves"):
        minibatches({}, 1, key=jr.key(0))
    with pytest.raises(ValueError, match="needs a leading example axis"):
        minibatches((jnp.zeros(4), jnp.float32(1.0)), 2, key=jr.key(0))
    with pytest.raises(TypeError, match="batch_size` must be a Python integer"):
        minibatches(jnp.zeros(4), 2.0, key=jr.key(0))
