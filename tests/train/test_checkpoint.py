"""Checkpoints: a save/load round trip is exact, and a mismatched or foreign file is refused."""

import json
import pickle

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import neurde

HYPERPARAMS = {"size": 2, "width_size": 8, "depth": 1}


def _make_ode(size=2, width_size=8, depth=1, *, key=None):
    key = jr.key(0) if key is None else key
    field = neurde.MLPField(size, width_size=width_size, depth=depth, key=key)
    return neurde.NeuralODE(field, t1=1.0, solver=neurde.RK4(), dt0=0.1)


def _make_sde(key):
    drift_key, diffusion_key = jr.split(key)
    drift = neurde.MLPField(2, width_size=8, depth=1, key=drift_key)
    diffusion = neurde.MLPField(
        2, width_size=8, depth=1, final_activation=jax.nn.sigmoid, key=diffusion_key
    )
    return neurde.NeuralSDE(drift, diffusion, t1=1.0, dt0=0.05)


def _assert_trees_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        if eqx.is_array(x):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


def _opt_state_after_a_step(optim, model):
    # A non-trivial Adam state (count, first and second moments) without compiling a solve.
    params = eqx.filter(model, neurde.trainable(model))
    grads = jax.tree.map(lambda p: 0.3 * p + 0.1, params)
    _, opt_state = optim.update(grads, neurde.init_optimizer(optim, model), params)
    return opt_state


def test_neural_ode_round_trip(tmp_path):
    model = _make_ode(key=jr.key(1))
    optim = optax.adam(1e-3)
    opt_state = _opt_state_after_a_step(optim, model)
    path = tmp_path / "nested" / "ode.eqx"
    neurde.save(path, model, hyperparams=HYPERPARAMS, opt_state=opt_state)

    like = _make_ode(key=jr.key(2))
    loaded, loaded_opt_state = neurde.load(
        path, like, opt_state_like=neurde.init_optimizer(optim, like)
    )
    _assert_trees_equal(loaded, model)
    _assert_trees_equal(loaded_opt_state, opt_state)
    y0 = jnp.array([0.4, -1.0])
    ts = jnp.linspace(0.0, 1.0, 5)
    np.testing.assert_array_equal(loaded(y0, ts), model(y0, ts))
    # `like` had other values: the load did replace them.
    assert np.abs(np.asarray(like(y0, ts) - model(y0, ts))).max() > 1e-3

    # Without `opt_state_like` the stored optimizer state is skipped.
    _assert_trees_equal(neurde.load(path, like), model)


def test_neural_sde_round_trip(tmp_path):
    model = _make_sde(jr.key(3))
    path = tmp_path / "sde.eqx"
    neurde.save(path, model)
    loaded = neurde.load(path, _make_sde(jr.key(4)))
    _assert_trees_equal(loaded, model)
    # Same key, same Brownian path: the sample paths agree exactly.
    y0 = jnp.array([0.5, 0.2])
    np.testing.assert_array_equal(loaded(y0, key=jr.key(5)), model(y0, key=jr.key(5)))


def test_load_builds_the_model_from_stored_hyperparams(tmp_path):
    model = _make_ode(**HYPERPARAMS, key=jr.key(6))
    path = tmp_path / "ode.eqx"
    neurde.save(path, model, hyperparams=HYPERPARAMS)
    header = neurde.load_header(path)
    assert header["hyperparams"] == HYPERPARAMS
    assert header["neurde_version"] == neurde.__version__
    assert header["model"]["class"] == "NeuralODE"
    assert header["opt_state"] is None

    seen = []

    def build(hyperparams):
        seen.append(hyperparams)
        return _make_ode(**hyperparams)

    _assert_trees_equal(neurde.load(path, build), model)
    assert seen == [HYPERPARAMS]


@pytest.mark.parametrize(
    ("like", "message"),
    [
        (
            lambda: _make_ode(width_size=16),
            r"array \d+ of the saved model has shape \(\d+, \d+\) and dtype float32, but `like` "
            r"has shape \(\d+, \d+\).*width",
        ),
        (
            lambda: _make_ode(depth=2),
            r"holds a model with \d+ arrays, but `like` has \d+.*depth.*"
            r"Saved hyperparameters: \{'size': 2, 'width_size': 8, 'depth': 1\}",
        ),
        (
            lambda: _make_sde(jr.key(0)),
            r"holds a model of class NeuralODE, but `like` is a NeuralSDE",
        ),
    ],
    ids=["width", "depth", "class"],
)
def test_a_different_model_is_refused(tmp_path, like, message):
    path = tmp_path / "ode.eqx"
    neurde.save(path, _make_ode(), hyperparams=HYPERPARAMS)
    with pytest.raises(ValueError, match=message):
        neurde.load(path, like())


def test_a_missing_optimizer_state_is_reported(tmp_path):
    model = _make_ode()
    path = tmp_path / "ode.eqx"
    neurde.save(path, model)
    optim = optax.adam(1e-3)
    with pytest.raises(ValueError, match="holds no optimizer state; pass `opt_state_like=None`"):
        neurde.load(path, model, opt_state_like=neurde.init_optimizer(optim, model))


def test_a_non_checkpoint_file_is_refused(tmp_path):
    model = _make_ode()
    plain = tmp_path / "plain.eqx"
    eqx.tree_serialise_leaves(plain, model)
    with pytest.raises(ValueError, match="is not a neurde checkpoint"):
        neurde.load(plain, model)
    with pytest.raises(ValueError, match="is not a neurde checkpoint"):
        neurde.load_header(plain)


@pytest.mark.parametrize("bad", [jnp.tanh, np.float32(1.5), {"nested": {1, 2}}])
def test_unserialisable_hyperparams(tmp_path, bad):
    path = tmp_path / "ode.eqx"
    with pytest.raises(TypeError, match="`hyperparams` must be JSON-serialisable"):
        neurde.save(path, _make_ode(), hyperparams={"bad": bad})
    assert not path.exists()


_EXECUTED = []


def _run_payload(tag):
    _EXECUTED.append(tag)


class _Payload:
    """Unpickling this object calls `_run_payload`: it stands for arbitrary code."""

    def __reduce__(self):
        return _run_payload, ("unpickled",)


def _header_line(path):
    with path.open("rb") as f:
        f.readline()
        return f.readline()


def test_loading_never_unpickles(tmp_path):
    model = _make_ode()
    good = tmp_path / "good.eqx"
    neurde.save(good, model)
    magic = good.read_bytes().splitlines(keepends=True)[0]
    header = _header_line(good)
    assert json.loads(header)["model"]["class"] == "NeuralODE"

    # The payload is live: plain unpickling runs it.
    pickle.loads(pickle.dumps(_Payload()))
    assert _EXECUTED == ["unpickled"]
    _EXECUTED.clear()

    # 1. The array data replaced by a bare pickle.
    raw = tmp_path / "raw.eqx"
    raw.write_bytes(magic + header + pickle.dumps(_Payload()))
    # 2. A well-formed .npy object array, whose elements are pickled.
    npy = tmp_path / "npy.eqx"
    with npy.open("wb") as f:
        f.write(magic + header)
        np.save(f, np.array([_Payload()], dtype=object), allow_pickle=True)
    for path in (raw, npy):
        # NumPy refuses pickled data (allow_pickle=False); Equinox wraps its ValueError in
        # an error that names the leaf being read.
        with pytest.raises(Exception) as e:
            neurde.load(path, model)
        assert any(isinstance(c, ValueError) and "pickle" in str(c) for c in _chain(e.value))
    assert _EXECUTED == []


def _chain(error):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__
