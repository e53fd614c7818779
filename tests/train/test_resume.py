"""Resumable training: a run killed with SIGKILL and resumed ends bit-identical to one that
was never interrupted; a checkpoint of another run is refused, never mixed in."""

import importlib.util
import itertools
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import neurde
from neurde.train.batches import minibatches_from

STEPS = 160

# The run, as a script: `python run.py DIR OUT` trains with checkpoints in DIR and writes
# the final parameters and loss history to OUT. Each finished step is printed, so that the
# test can kill it at a chosen step. Imported by the test, `train(None)` is the reference.
SCRIPT = textwrap.dedent(
    f"""
    import sys, time
    import jax, jax.numpy as jnp, jax.random as jr, numpy as np, optax
    import neurde

    def loss_fn(model, batch, key):
        x, y = batch
        # Key-dependent (dropout-like noise), so the per-step keys must be resumed too.
        x = jnp.where(jr.bernoulli(key, 0.8, x.shape), x, 0.0)
        pred = jnp.tanh(x @ model["w1"] + model["b1"]) @ model["w2"]
        return jnp.mean((pred - y) ** 2)

    def train(checkpoint_dir, every=7, slow=0.0):
        # NumPy initialization: eager JAX random calls would each compile, in each process.
        rng = np.random.default_rng(0)
        x = rng.normal(size=(40, 2)).astype(np.float32)
        data = (x, np.sin(x[:, ::-1]))
        model = {{
            "w1": jnp.asarray(rng.normal(size=(2, 8)), jnp.float32),
            "b1": jnp.zeros(8),
            "w2": jnp.asarray(rng.normal(size=(8, 2)) / 3, jnp.float32),
        }}

        def callback(step, model):
            print(step, flush=True)
            time.sleep(slow)

        return neurde.fit(
            model, loss_fn, data, steps={STEPS}, key=jr.key(3), optim=optax.adam(1e-2),
            batch_size=8, callback=callback, eval_every=1, progress=False,
            checkpoint_dir=checkpoint_dir, checkpoint_every=every if checkpoint_dir else None,
        )

    if __name__ == "__main__":
        result = train(sys.argv[1], slow=0.004)
        leaves = jax.tree.leaves((result.model, result.opt_state))
        np.savez(sys.argv[2], loss=np.stack(result.history.loss), *leaves)
    """
)


def _write_script(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    spec = importlib.util.spec_from_file_location("resume_run", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return script, module


def _run(script, checkpoints, out, kill_at=None):
    """Run the script; with `kill_at`, SIGKILL it once it has printed that step. Returns the
    steps it printed."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    log = out.with_suffix(".stderr")
    with log.open("w") as stderr:  # a file, not a pipe: a full pipe would block the child
        process = subprocess.Popen(
            [sys.executable, str(script), str(checkpoints), str(out)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        printed = []
        for line in process.stdout:
            printed.append(int(line))
            if kill_at is not None and printed[-1] >= kill_at:
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=120)
        process.stdout.close()
    expected = 0 if kill_at is None else -signal.SIGKILL
    assert process.returncode == expected, log.read_text()[-2000:]
    return printed


def test_a_killed_run_resumes_bit_identically(tmp_path):
    script, module = _write_script(tmp_path)
    with jax.default_device(jax.devices("cpu")[0]):  # where the subprocesses run
        reference = module.train(None)
    checkpoints, out = tmp_path / "checkpoints", tmp_path / "out.npz"
    seed = int.from_bytes(os.urandom(4), "little")
    # Three kills at random steps, each at least 40 steps (>= 0.16 s) before the end, so the
    # signal lands before the run can finish.
    kills = sorted(np.random.default_rng(seed).choice(np.arange(10, STEPS - 40), 3, False))
    starts = []
    for kill_at in kills:
        printed = _run(script, checkpoints, out, kill_at=int(kill_at))
        starts.append(printed[0])
    printed = _run(script, checkpoints, out)
    starts.append(printed[0])
    note = f"seed {seed}, kills at {kills}, runs began at steps {starts}"
    # Every run after the first resumed from a checkpoint: it began after step 1, at most
    # 7 steps (`every`, one checkpoint lost to a kill mid-write) before the previous kill.
    assert starts[0] == 1, note
    for previous_kill, start in zip(kills, starts[1:], strict=True):
        assert start >= previous_kill - 6, note
    assert printed[-1] == STEPS, note

    with np.load(out) as saved:
        leaves = jax.tree.leaves((reference.model, reference.opt_state))
        assert len(saved.files) == len(leaves) + 1
        for i, leaf in enumerate(leaves):
            assert np.array_equal(saved[f"arr_{i}"], np.asarray(leaf)), note
        np.testing.assert_array_equal(saved["loss"], np.stack(reference.history.loss))
    # Only the two newest checkpoints are kept; the last holds the final step.
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names[-1] == f"step-{STEPS:09d}.ckpt" and len(names) == 2, names


def test_minibatches_can_start_at_any_step():
    x = np.arange(22.0).reshape(11, 2)
    data = (x, np.arange(11))
    key = jr.key(4)
    # 11 examples in batches of 3: 3 batches per epoch, 2 examples dropped each epoch.
    expected = list(itertools.islice(neurde.data.minibatches(data, 3, key=key), 10))
    assert not np.array_equal(expected[0][1], expected[3][1])  # epochs are reshuffled
    for start in (0, 2, 3, 7):
        got = list(itertools.islice(minibatches_from(data, 3, key, start), 10 - start))
        for a, b in zip(got, expected[start:], strict=True):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


W_TRUE = np.array([1.0, -2.0, 0.5], np.float32)


def _data(n=24):
    x = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    return x, x @ W_TRUE


def _noisy_mse(model, batch, key):
    x, y = batch
    noise = 0.1 * jr.normal(key, y.shape)
    return jnp.mean((x @ model["w"] + model["b"] - y - noise) ** 2), {"norm": jnp.sum(x**2)}


# One optimizer object for every run: `fit` reuses the compiled step of (loss, optimizer).
ADAM = optax.adam(0.05)
SGD = optax.sgd(0.1, momentum=0.9)


class _Stop(Exception):
    pass


def _fit(directory, *, data=None, model=None, stop_at=None, **kwargs):
    """A short run; `stop_at` interrupts it (an exception in the callback) after that step."""

    def callback(step, model):
        if step == stop_at:
            raise _Stop
        return {"w0": model["w"][0], "step": step}

    model = {"w": jnp.zeros(3), "b": jnp.zeros(())} if model is None else model
    kwargs = {
        "steps": 11,
        "key": jr.key(3),
        "optim": ADAM,
        "batch_size": 5,
        "progress": False,
        "callback": callback,
        "eval_every": 2,
        "checkpoint_dir": directory,
        "checkpoint_every": None if directory is None else 3,
    } | kwargs
    return neurde.fit(model, _noisy_mse, _data() if data is None else data, **kwargs)


def _assert_same_run(a, b):
    for x, y in zip(
        jax.tree.leaves((a.model, a.opt_state)),
        jax.tree.leaves((b.model, b.opt_state)),
        strict=True,
    ):
        assert np.array_equal(x, y)
    np.testing.assert_array_equal(np.stack(a.history.loss), np.stack(b.history.loss))
    np.testing.assert_array_equal(a.history.metrics["norm"], b.history.metrics["norm"])
    assert [s for s, _ in a.history.evals] == [s for s, _ in b.history.evals]
    for (_, u), (_, v) in zip(a.history.evals, b.history.evals, strict=True):
        assert np.array_equal(np.asarray(u["w0"]), np.asarray(v["w0"]))


def test_an_interrupted_run_resumes_exactly(tmp_path):
    reference = _fit(None)
    assert len(reference.history.loss) == 11
    for stop_at in (4, 8):  # after the checkpoints of steps 3 and 6
        with pytest.raises(_Stop):
            _fit(tmp_path, stop_at=stop_at)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000000003.ckpt",
        "step-000000006.ckpt",
    ]
    resumed = _fit(tmp_path)
    _assert_same_run(resumed, reference)
    # Step times before the resume come from the checkpoint; a finished run returns at once.
    again = _fit(tmp_path)
    _assert_same_run(again, reference)
    assert again.history.time == resumed.history.time
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000000009.ckpt",
        "step-000000011.ckpt",
    ]


def test_an_iterator_is_advanced_past_the_used_batches(tmp_path):
    x, y = _data()
    batches = [(x[i : i + 2], y[i : i + 2]) for i in range(0, 22, 2)]
    reference = _fit(None, data=iter(batches), batch_size=None)
    with pytest.raises(_Stop):
        _fit(tmp_path, data=iter(batches), batch_size=None, stop_at=8)
    _assert_same_run(_fit(tmp_path, data=iter(batches), batch_size=None), reference)


def _other_optimizer(kwargs):
    return kwargs | {"optim": SGD}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda k: k | {"steps": 20}, r"steps: 11 -> 20"),
        (lambda k: k | {"batch_size": 4}, r"batch_size: 5 -> 4"),
        (lambda k: k | {"key": jr.key(4)}, r"key: \[0, 3\] -> \[0, 4\]"),
        (lambda k: k | {"eval_every": 3}, r"eval_every: 2 -> 3"),
        (lambda k: k | {"data": (_data()[0] * 2, _data()[1])}, r"data_sha256: '[0-9a-f]+' -> '"),
        (
            lambda k: k | {"model": {"w": jnp.zeros(3), "b": jnp.zeros(()), "c": jnp.zeros(())}},
            r"model: 'dict\[2\]' -> 'dict\[3\]'.*model\['c'\]: \(absent\) -> 'float32\[\]'",
        ),
        (_other_optimizer, r"opt_state\[0\]: '<ScaleByAdamState>' -> '<TraceState>'"),
    ],
    ids=["steps", "batch_size", "key", "eval_every", "data", "model", "optimizer"],
)
def test_a_checkpoint_of_another_run_is_refused(tmp_path, change, message):
    with pytest.raises(_Stop):
        _fit(tmp_path, stop_at=4)
    kwargs = change({})
    with pytest.raises(
        ValueError,
        match=rf"(?s)holds '{tmp_path}/step-000000003.ckpt' \(step 3\) of another run"
        rf".*{message}.*`resume=False`",
    ):
        _fit(tmp_path, **kwargs)
    # `resume=False` starts over: the result is that of a fresh run with these arguments.
    fresh = _fit(tmp_path, resume=False, **kwargs)
    _assert_same_run(fresh, _fit(None, **kwargs))


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    with pytest.raises(_Stop):
        _fit(tmp_path, stop_at=8)
    newest = tmp_path / "step-000000006.ckpt"
    newest.write_bytes(newest.read_bytes()[:-10])
    with pytest.warns(
        UserWarning, match=r"(?s)step-000000006.ckpt' is damaged: truncated.*before it"
    ):
        resumed = _fit(tmp_path)
    _assert_same_run(resumed, _fit(None))


def test_bad_checkpoint_arguments(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ValueError, match=rf"`checkpoint_dir` '{a_file}' is a file, not a folder"):
        _fit(a_file)
    with pytest.raises(ValueError, match=r"`checkpoint_every=3` needs `checkpoint_dir`"):
        _fit(None, checkpoint_every=3)
    with pytest.raises(ValueError, match=r"`checkpoint_every` must be an integer >= 1, got 0"):
        _fit(tmp_path, checkpoint_every=0)
    with pytest.raises(TypeError, match=r"`checkpoint_dir` must be a folder name .* got int"):
        _fit(3)
    with pytest.raises(TypeError, match=r"`resume` must be True or False, got 'yes'"):
        _fit(tmp_path, resume="yes")
    with pytest.raises(TypeError, match=r"with `checkpoint_dir`, `callback` must return JSON data"):
        _fit(tmp_path / "run", callback=lambda step, model: object())
    # Without checkpoints, the callback may return anything.
    marker = object()
    result = _fit(None, callback=lambda step, model: marker, steps=2)
    assert result.history.evals == [(2, marker)]


def test_step_keys_and_batches_are_functions_of_key_and_step():
    # The documented streams: `data_key, step_key = split(key)`; step i uses the key
    # `fold_in(step_key, i)` and batch i of `minibatches(data, batch_size, key=data_key)`.
    def loss(model, batch, key):
        x, y = batch
        aux = {"key": jr.key_data(key), "first": x[:, 0]}
        return jnp.mean((x @ model["w"] - y) ** 2), aux

    data = _data()
    result = neurde.fit(
        _model_dict(), loss, data, steps=7, key=jr.key(5), optim=SGD, batch_size=5, progress=False
    )
    data_key, step_key = jr.split(jr.key(5))
    batches = list(itertools.islice(neurde.data.minibatches(data, 5, key=data_key), 7))
    for i in range(7):
        np.testing.assert_array_equal(
            result.history.metrics["key"][i], jr.key_data(jr.fold_in(step_key, i))
        )
        np.testing.assert_array_equal(result.history.metrics["first"][i], batches[i][0][:, 0])


def _model_dict():
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}


def test_an_interrupted_ensemble_run_resumes_exactly(tmp_path):
    ensemble = {"w": jnp.asarray(np.arange(6.0).reshape(2, 3) / 6, jnp.float32), "b": jnp.zeros(2)}
    kwargs = {"model": ensemble, "ensemble": True, "steps": 7}
    reference = _fit(None, **kwargs)
    assert np.stack(reference.history.loss).shape == (7, 2)
    with pytest.raises(_Stop):
        _fit(tmp_path, stop_at=4, **kwargs)
    _assert_same_run(_fit(tmp_path, **kwargs), reference)
