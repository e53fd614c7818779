"""Checkpoints: a save/load round trip is exact, and a mismatched or foreign file is refused."""

import io
import os
import pathlib
import pickle

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import neurde
from neurde.train import checkpoint

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
            r"(?s)differs from `like` in 6 place\(s\).*"
            r"model.field.mlp.layers\[0\].weight: 'float32\[8, 2\]' -> 'float32\[16, 2\]'.*"
            r"model.field.mlp.width_size: 8 -> 16",
        ),
        (
            lambda: _make_ode(depth=2),
            r"(?s)model.field.mlp.layers: 'tuple\[2\]' -> 'tuple\[3\]'.*"
            r"model.field.mlp.layers\[2\]: \(absent\) -> '<Linear>'.*"
            r"saved hyperparameters: \{'size': 2, 'width_size': 8, 'depth': 1\}",
        ),
        (lambda: _make_sde(jr.key(0)), r"model: '<NeuralODE>' -> '<NeuralSDE>'"),
    ],
    ids=["width", "depth", "class"],
)
def test_a_different_model_is_refused(tmp_path, like, message):
    path = tmp_path / "ode.eqx"
    neurde.save(path, _make_ode(), hyperparams=HYPERPARAMS)
    with pytest.raises(ValueError, match=message) as e:
        neurde.load(path, like())
    assert str(path) in str(e.value)


def test_static_configuration_is_compared(tmp_path):
    # Same arrays, other static settings: `t1`, the solver, `max_steps`, the activation.
    path = tmp_path / "ode.eqx"
    neurde.save(path, _make_ode())
    field = neurde.MLPField(2, width_size=8, depth=1, activation=jnp.tanh, key=jr.key(0))
    other = neurde.NeuralODE(field, t1=2.0, solver=neurde.RK4(), dt0=0.1, max_steps=100)
    with pytest.raises(ValueError) as e:
        neurde.load(path, other)
    message = str(e.value)
    assert f"{str(path)!r} holds a model that differs from `like` in 3 place(s)" in message
    assert "model.t1: 1.0 -> 2.0" in message
    assert "model.max_steps: 4096 -> 100" in message
    assert "model.field.mlp.activation: '<function jax._src.nn.functions.softplus>' ->" in message
    solver = neurde.NeuralODE(_make_ode().field, t1=1.0, solver=diffrax.Euler(), dt0=0.1)
    with pytest.raises(ValueError, match=r"model.solver: '<RK4>' -> '<Euler>'"):
        neurde.load(path, solver)
    # The same configuration with other values loads.
    _assert_trees_equal(neurde.load(path, _make_ode(key=jr.key(9))), _make_ode())


def test_a_different_optimizer_state_is_refused(tmp_path):
    model = _make_ode()
    path = tmp_path / "ode.eqx"
    neurde.save(path, model, opt_state=_opt_state_after_a_step(optax.adam(1e-3), model))
    sgd_state = neurde.init_optimizer(optax.sgd(1e-3, momentum=0.9), model)
    with pytest.raises(
        ValueError,
        match=r"(?s)differs from `opt_state_like`.*opt_state\[0\]: "
        r"'<ScaleByAdamState>' -> '<TraceState>'",
    ):
        neurde.load(path, model, opt_state_like=sgd_state)


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


def test_loading_never_unpickles(tmp_path):
    model = _make_ode()
    good = tmp_path / "good.eqx"
    neurde.save(good, model)
    header = neurde.load_header(good)
    assert header["model"]["class"] == "NeuralODE"

    # The payload is live: plain unpickling runs it.
    pickle.loads(pickle.dumps(_Payload()))
    assert _EXECUTED == ["unpickled"]
    _EXECUTED.clear()

    # Files whose header (length, checksum) matches their data, so that only NumPy stands
    # between the data and unpickling. 1. The array data replaced by a bare pickle.
    keep = {k: header[k] for k in ("neurde_version", "hyperparams", "model", "opt_state")}
    raw = tmp_path / "raw.eqx"
    checkpoint._write(raw, keep, {"model": pickle.dumps(_Payload())})
    # 2. A well-formed .npy object array, whose elements are pickled.
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Payload()], dtype=object), allow_pickle=True)
    npy = tmp_path / "npy.eqx"
    checkpoint._write(npy, keep, {"model": buffer.getvalue()})
    for path in (raw, npy):
        # NumPy refuses pickled data (allow_pickle=False); the error names the file.
        with pytest.raises(ValueError, match=rf"could not read the arrays of '{path}'") as e:
            neurde.load(path, model)
        assert any(isinstance(c, ValueError) and "pickle" in str(c) for c in _chain(e.value))
    assert _EXECUTED == []


def _chain(error):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def _damage(path, how):
    data = path.read_bytes()
    magic, header, payload = data.split(b"\n", 2)
    if how == "truncated":
        path.write_bytes(data[: len(data) - len(payload) // 2])
    elif how == "truncated header":
        path.write_bytes(magic + b"\n" + header[: len(header) // 2])
    elif how == "header":
        path.write_bytes(magic + b"\n" + header[:-7] + b"\n" + payload)
    elif how == "flipped byte":
        payload = bytearray(payload)
        payload[len(payload) // 2] ^= 0xFF
        path.write_bytes(magic + b"\n" + header + b"\n" + bytes(payload))
    elif how == "format":
        path.write_bytes(b"NEURDE-CHECKPOINT 1\n" + header + b"\n" + payload)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", r"is damaged: truncated: \d+ of \d+ bytes of array data"),
        ("truncated header", r"is damaged: the file ends inside its header"),
        ("header", r"is damaged: its header is not valid JSON \(.*\)"),
        ("flipped byte", r"is damaged: the array data does not match the header's checksum"),
        ("format", r"has checkpoint format '1'; this neurde \(.*\) reads format 2"),
    ],
)
def test_a_damaged_file_is_reported_with_its_name(tmp_path, how, message):
    path = tmp_path / "ode.eqx"
    model = _make_ode()
    neurde.save(path, model, opt_state=neurde.init_optimizer(optax.sgd(0.1), model))
    _damage(path, how)
    for read in (lambda: neurde.load(path, model), lambda: neurde.load_header(path)):
        with pytest.raises(ValueError, match=message) as e:
            read()
        assert repr(str(path)) in str(e.value)


def test_a_missing_file_is_reported(tmp_path):
    path = tmp_path / "absent.eqx"
    with pytest.raises(FileNotFoundError, match=rf"load: no checkpoint at '{path}'"):
        neurde.load(path, _make_ode())


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m: neurde.save(3, m), TypeError, r"save: `path` must be a str or pathlib.Path"),
        (lambda m: neurde.load(None, m), TypeError, r"load: `path` must be a str or pathlib"),
        (
            lambda m: neurde.save("x.eqx", m, hyperparams=[1]),
            TypeError,
            r"`hyperparams` must be a dict \(or None\), got list",
        ),
    ],
    ids=["save-path", "load-path", "hyperparams-type"],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call(_make_ode())


def _saved_model_and_path(tmp_path):
    path = tmp_path / "ode.eqx"
    good = _make_ode(key=jr.key(1))
    neurde.save(path, good)
    return good, path


def test_a_crash_while_serialising_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    good, path = _saved_model_and_path(tmp_path)
    before = path.read_bytes()
    real = eqx.tree_serialise_leaves

    def crash_half_way(f, tree):
        real(f, jax.tree.leaves(tree)[:2])  # some bytes written, then a crash
        raise KeyboardInterrupt

    monkeypatch.setattr(eqx, "tree_serialise_leaves", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        neurde.save(path, _make_ode(key=jr.key(2)))
    monkeypatch.undo()
    assert path.read_bytes() == before
    _assert_trees_equal(neurde.load(path, _make_ode()), good)
    assert os.listdir(tmp_path) == ["ode.eqx"]  # no temporary file left behind


def test_a_crash_while_writing_the_file_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    good, path = _saved_model_and_path(tmp_path)
    written = []

    def crash_before_rename(src, dst):
        # The new file is complete and synced under its temporary name; the rename is lost.
        written.append(pathlib.Path(src).read_bytes())
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash_before_rename)
    with pytest.raises(OSError, match="disk gone"):
        neurde.save(path, _make_ode(key=jr.key(2)))
    monkeypatch.undo()
    _assert_trees_equal(neurde.load(path, _make_ode()), good)
    assert os.listdir(tmp_path) == ["ode.eqx"]
    # The temporary file held the whole new checkpoint: the rename was the only step left.
    replacement = tmp_path / "new.eqx"
    replacement.write_bytes(written[0])
    _assert_trees_equal(neurde.load(replacement, _make_ode()), _make_ode(key=jr.key(2)))
