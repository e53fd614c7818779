"""Every argument of the training functions, each class of invalid value: a `TypeError` or
`ValueError` that names the call, the argument and the fix, raised before anything runs.

Covered elsewhere: `fit`'s `steps`, `eval_every`, `batch_size` with an iterator and data
that runs out (test_fit.py); `checkpoint_dir`, `checkpoint_every`, `resume` and callbacks
returning non-JSON data (test_resume.py); `save`/`load` paths, hyperparameters, damaged
files and other models (test_checkpoint.py); `make_ensemble`'s `n` (test_ensemble.py).
"""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import neurde

SGD = optax.sgd(0.1)
ADAM = optax.adam(0.1)


def _loss(model, batch, key):
    del key
    x, y = batch
    return jnp.mean((x @ model["w"] - y) ** 2)


def _data(n=8):
    x = np.linspace(-1.0, 1.0, 3 * n, dtype=np.float32).reshape(n, 3)
    return x, x.sum(axis=1)


def _model():
    return {"w": jnp.zeros(3)}


def _ensemble(n=4):
    return {"w": jnp.zeros((n, 3))}


def _fit(**kwargs):
    kwargs = {
        "model": _model(),
        "loss_fn": _loss,
        "data": _data(),
        "steps": 2,
        "key": jr.key(0),
        "optim": SGD,
        "progress": False,
    } | kwargs
    return neurde.fit(kwargs.pop("model"), kwargs.pop("loss_fn"), kwargs.pop("data"), **kwargs)


FIT_CASES = {
    "model-without-parameters": (
        {"model": {"n": 3, "flag": jnp.array(True)}},
        ValueError,
        r"fit: `model` has no trainable arrays .* got a dict",
    ),
    "loss_fn-not-callable": (
        {"loss_fn": "mse"},
        TypeError,
        r"fit: `loss_fn` must be a function `loss\(model, batch, key\)`, got str",
    ),
    "data-too-small-for-batch_size": (
        {"batch_size": 9},
        ValueError,
        r"`batch_size` must be at most the number of examples, 8",
    ),
    "data-leaves-disagree": (
        {"data": (np.zeros((8, 3)), np.zeros(7)), "batch_size": 2},
        ValueError,
        r"every leaf of `arrays` must share the leading axis",
    ),
    "steps-bool": ({"steps": True}, ValueError, r"`steps` must be an integer >= 1, got True"),
    "key-int": ({"key": 0}, TypeError, r"`key` must be a single JAX PRNG key"),
    "key-batch-of-keys": (
        {"key": jr.split(jr.key(0), 2)},
        TypeError,
        r"`key` must be a single JAX PRNG key",
    ),
    "optim-string": (
        {"optim": "adam"},
        TypeError,
        r"fit: `optim` must be an Optax transformation such as `optax.adam\(1e-3\)`, got str "
        r"\('adam'\) \(to use Optax's adam, pass `optax.adam\(1e-3\)`\)",
    ),
    "optim-function": (
        {"optim": optax.adam},
        TypeError,
        r"`optim` must be an Optax transformation .* got function",
    ),
    "batch_size-zero": ({"batch_size": 0}, ValueError, r"`batch_size` must be an integer >= 1"),
    "batch_size-float": ({"batch_size": 2.5}, ValueError, r"`batch_size` must be an integer >= 1"),
    "opt_state-of-another-optimizer": (
        {"opt_state": neurde.init_optimizer(SGD, _model()), "optim": ADAM},
        ValueError,
        r"(?s)fit: `opt_state` does not fit the model and optimizer: it differs from "
        r"`optim.init` .*opt_state\[0\]: '<ScaleByAdamState>' -> '<EmptyState>'.*"
        r"neurde.init_optimizer\(optim, model\)",
    ),
    "opt_state-of-another-model": (
        {"opt_state": neurde.init_optimizer(ADAM, {"w": jnp.zeros(4)}), "optim": ADAM},
        ValueError,
        r"opt_state\[0\].mu\['w'\]: 'float32\[3\]' -> 'float32\[4\]'",
    ),
    "ensemble-not-bool": ({"ensemble": 1}, TypeError, r"`ensemble` must be True or False, got 1"),
    "ensemble-of-a-single-model": (
        {"model": {"w": jnp.zeros(3), "b": jnp.zeros(())}, "ensemble": True},
        ValueError,
        r"fit\(ensemble=True\): `model` is not a stacked ensemble: its arrays do not share a "
        r"leading member axis \(shapes \[\(\), \(3,\)\]\). Build an ensemble with "
        r"`neurde.make_ensemble.*or pass `ensemble=False`",
    ),
    "ensemble-opt_state-member-count": (
        {
            "model": _ensemble(4),
            "ensemble": True,
            "opt_state": neurde.ensemble_init_optimizer(ADAM, _ensemble(3)),
            "optim": ADAM,
        },
        ValueError,
        r"fit: `opt_state` must have a member axis \(axis 0\) of size 4, the number of ensemble "
        r"members; its arrays have shapes \[\(3,\), \(3, 3\), \(3, 3\)\]. Pass the state of the "
        r"same optimizer, from `neurde.ensemble_init_optimizer\(optim, model\)`",
    ),
    "callback-not-callable": (
        {"callback": [print]},
        TypeError,
        r"`callback` must be a function `callback\(step, model\)` or None, got list",
    ),
    "progress-not-bool": ({"progress": "no"}, TypeError, r"`progress` must be True or False"),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_refuses(case):
    kwargs, error, message = FIT_CASES[case]
    with pytest.raises(error, match=message):
        _fit(**kwargs)


def test_fit_accepts_a_matching_opt_state():
    # The check compares structure, not values: a state from an earlier run continues it.
    first = _fit(steps=2, optim=ADAM)
    second = _fit(model=first.model, opt_state=first.opt_state, optim=ADAM, steps=1)
    reference = _fit(steps=3, optim=ADAM)
    np.testing.assert_allclose(second.model["w"], reference.model["w"], rtol=1e-6)
    assert np.abs(np.asarray(reference.model["w"])).min() > 0.1


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: neurde.make_step(_loss, "sgd"),
            TypeError,
            r"make_step: `optim` must be an Optax .*pass `optax.sgd\(1e-3\)`",
        ),
        (lambda: neurde.make_step(None, SGD), TypeError, r"make_step: `loss_fn` must be a fun"),
        (
            lambda: neurde.init_optimizer("adam", _model()),
            TypeError,
            r"init_optimizer: `optim` must be an Optax transformation",
        ),
        (
            lambda: neurde.make_ensemble(3, 2, key=jr.key(0)),
            TypeError,
            r"make_ensemble: `make_model` must be a function `key -> model`, got int",
        ),
        (
            lambda: neurde.make_ensemble(lambda k: _model(), 2, key=1),
            TypeError,
            r"`make_ensemble\(..., key=1\)`: `key` must be a single JAX PRNG key",
        ),
        (
            lambda: neurde.make_ensemble_step(_loss, "adam"),
            TypeError,
            r"make_ensemble_step: `optim` must be an Optax transformation",
        ),
        (
            lambda: neurde.make_ensemble_step(_loss, SGD, batch_axis="0"),
            TypeError,
            r"`batch_axis` must be None .* or an integer axis of per-member batches, got '0'",
        ),
        (
            lambda: neurde.ensemble_size({"w": jnp.zeros(3), "b": jnp.zeros((2, 3))}),
            ValueError,
            r"ensemble_size: `ensemble` is not a stacked ensemble: .*shapes \[\(2, 3\), \(3,\)\]",
        ),
        (
            lambda: neurde.ensemble_size({"n": 3}),
            ValueError,
            r"ensemble_size: `ensemble` has no arrays to read a member count from",
        ),
        (
            lambda: neurde.ensemble_member(_ensemble(4), 4),
            ValueError,
            r"ensemble_member: `i` must be an integer in \[-4, 4\) for an ensemble of 4 members, "
            r"got 4",
        ),
        (
            lambda: neurde.ensemble_member(_ensemble(4), 1.0),
            ValueError,
            r"`i` must be an integer in \[-4, 4\)",
        ),
        (
            lambda: neurde.ensemble_init_optimizer("adam", _ensemble()),
            TypeError,
            r"ensemble_init_optimizer: `optim` must be an Optax transformation",
        ),
        (
            lambda: neurde.ensemble_init_optimizer(SGD, {"w": jnp.zeros(()), "b": jnp.zeros(2)}),
            ValueError,
            r"ensemble_init_optimizer: `ensemble` is not a stacked ensemble",
        ),
        (
            lambda: neurde.ensemble_predict(_ensemble(), jnp.ones(3), fn="mean"),
            TypeError,
            r"ensemble_predict: `fn` must be a function `fn\(member, x\)` or None, got str",
        ),
    ],
    ids=[
        "make_step-optim",
        "make_step-loss_fn",
        "init_optimizer-optim",
        "make_ensemble-make_model",
        "make_ensemble-key",
        "make_ensemble_step-optim",
        "make_ensemble_step-batch_axis",
        "ensemble_size-unstacked",
        "ensemble_size-no-arrays",
        "ensemble_member-out-of-range",
        "ensemble_member-float",
        "ensemble_init_optimizer-optim",
        "ensemble_init_optimizer-unstacked",
        "ensemble_predict-fn",
    ],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def _ensemble_loss(model, batch, key):
    del key
    return jnp.mean((batch @ model["w"]) ** 2)


def test_ensemble_step_checks_member_counts():
    ensemble = _ensemble(4)
    per_member = neurde.make_ensemble_step(_ensemble_loss, SGD, batch_axis=0)
    shared = neurde.make_ensemble_step(_ensemble_loss, SGD)
    adam_step = neurde.make_ensemble_step(_ensemble_loss, ADAM)
    with pytest.raises(
        ValueError,
        match=r"make_ensemble_step: step: `opt_states` must have a member axis \(axis 0\) of "
        r"size 4, the number of ensemble members; its arrays have shapes \[\(3,\), \(3, 3\), "
        r"\(3, 3\)\]. Initialize it with `neurde.ensemble_init_optimizer\(optim, ensemble\)`",
    ):
        adam_step(
            ensemble,
            neurde.ensemble_init_optimizer(ADAM, _ensemble(3)),
            jnp.ones((2, 3)),
            jr.key(0),
        )
    sgd_state = neurde.ensemble_init_optimizer(SGD, ensemble)
    with pytest.raises(
        ValueError,
        match=r"step: `batch` must have a member axis \(axis 0\) of size 4, the number of "
        r"ensemble members; its arrays have shapes \[\(3, 2, 3\)\]. Stack one batch per member "
        r"along axis 0",
    ):
        per_member(ensemble, sgd_state, jnp.ones((3, 2, 3)), jr.key(0))
    with pytest.raises(ValueError, match=r"step: `ensemble` is not a stacked ensemble"):
        shared({"w": jnp.zeros(3), "b": jnp.zeros(())}, sgd_state, jnp.ones((2, 3)), jr.key(0))
    # Right counts: member i of a per-member step sees batch i. x = i-th row of ones * (i+1),
    # w = 0.5: loss_i = mean((1.5 (i + 1))^2) = 2.25 (i + 1)^2.
    members = jnp.arange(1.0, 5.0)[:, None, None] * jnp.ones((4, 2, 3))
    _, _, losses, _ = per_member({"w": jnp.full((4, 3), 0.5)}, sgd_state, members, jr.key(0))
    np.testing.assert_allclose(losses, 2.25 * np.arange(1.0, 5.0) ** 2, rtol=1e-6)
