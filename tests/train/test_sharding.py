"""Sharded training and inference on a device mesh, and multi-process runs.

The 8-device checks need `XLA_FLAGS=--xla_force_host_platform_device_count=8` before JAX
starts, so they run in a subprocess (`sharding_checks.py`), one per group of checks, whose
JSON results are compared here with the tolerances. Float32 throughout: sharded and
unsharded programs reduce the batch in a different order, so parameters after 20 Adam steps
agree to about 1e-7 relative; the acceptance tolerance is 1e-6. The default selection runs
the adaptive `NeuralODE` (also with `Sharding(..., per_example_loss=True)`), the bad-input
messages and a failing solve under sharding; the
`NeuralSDE`, the discrete stack, inference and the two-process `jax.distributed` run are
`expensive` (`pytest -m expensive tests/train/test_sharding.py`).
"""

import functools
import json
import os
import pathlib
import socket
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import neurde

HERE = pathlib.Path(__file__).parent
TOLERANCE = 1e-6  # relative, float32 (the acceptance)


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.pop("EQX_ON_ERROR", None)  # Equinox's run-time checks on (raise), the default
    return env


@functools.cache
def _checks(*groups: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE / "sharding_checks.py"), *groups],
        env=_env(8),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# One subprocess for every default check: start-up and imports are paid once.
DEFAULT = ("ode", "errors")


def _assert_equal_training(result: dict) -> None:
    for mode in ("data", "ensemble"):
        r = result[mode]
        assert r["moved"] > 0.1, r  # training changed the parameters: equality means something
        assert r["rel"] < TOLERANCE, (mode, r)
        assert r["opt_rel"] < TOLERANCE, (mode, r)
        assert r["loss_rel"] < TOLERANCE, (mode, r)
        # Traced (and compiled) once for 20 steps, sharded as unsharded.
        assert r["traces"] == 1 and r["ref_traces"] == 1, (mode, r)
    assert result["data"]["devices"] == 8 and result["data"]["replicated"]
    assert result["ensemble"]["member_shards"] == 2  # 4 members over a members axis of 2


def test_adaptive_neural_ode_data_and_ensemble_parallel_equal_unsharded():
    result = _checks(*DEFAULT)["ode"]
    _assert_equal_training(result)
    # The NFE statistics and solver outcomes recorded by `fit` (host-side reads of each
    # step's aux): equal at the first step (equal parameters: the sharded solve itself
    # takes the same steps per example). Later the parameters differ by ~1e-7 (the batch
    # is reduced in another order), and an example's step count (3 or 4 Tsit5 steps here)
    # is a step function of the parameters: on one device, a random 1e-7 relative change
    # of the trained parameters changes the NFE of 5 to 12 of the 64 examples. Measured
    # over 20 steps: up to 8% of a step's batch mean (a few of 16 examples, 6 NFE each).
    assert result["data"]["first_metrics"] == 0.0
    assert result["data"]["metrics"] < 0.15


def test_per_example_loss_equals_unsharded_and_the_exact_path():
    # One local solver loop per device, losses and gradients averaged once per step: for a
    # mean of per-example terms, the same 20 steps as unsharded and as the default path.
    r = _checks(*DEFAULT)["ode"]["per_example"]
    assert r["rel"] < TOLERANCE and r["rel_exact"] < TOLERANCE, r
    assert r["opt_rel"] < TOLERANCE and r["loss_rel"] < TOLERANCE, r
    assert r["traces"] == 1 and r["replicated"], r
    # Aux: the NFE mean averaged over the devices, the per-example outcomes joined.
    assert r["first_metrics"] < 1e-6 and r["result_shape"] == [16], r


@pytest.mark.parametrize(
    "case, message",
    [
        ("batch_size", r"fit: `batch_size=12` cannot be split evenly over the 8 devices"),
        ("whole_data", r"fit: `data` has batch size 12 .* divisible by 8"),
        ("step_batch", r"make_step: step: `batch` has batch size 12 .* divisible by 8"),
        ("members", r"fit: `model` has 3 members, .* 'members' .* multiple of 2"),
        ("ensemble_step_members", r"make_ensemble_step: step: `ensemble` has 3 members"),
        ("axis", r"Sharding: `data='batch'` is not an axis of the mesh, whose axes are \("),
        ("members_axis", r"Sharding: `members='ens'` is not an axis of the mesh"),
        ("two_d_plain", r"make_step: a plain `mesh` must have one axis, .*neurde.Sharding"),
        ("members_without_ensemble", r"fit: `mesh` shards ensemble members .* `ensemble=True`"),
        ("not_a_mesh", r"TypeError: make_step: `mesh` must be a neurde.Sharding"),
    ],
)
def test_bad_layouts_are_refused_with_the_fix(case, message):
    import re

    got = _checks(*DEFAULT)["errors"][case]
    assert re.search(message, got), got


def test_a_failing_solve_under_sharding_is_reported_not_a_crash():
    # With EQX_ON_ERROR=raise a failing check inside a sharded step would raise on one
    # device and abort the process (the others wait in an all-reduce); fit reports it,
    # with the same compiled step (tolerances are arrays: no retrace).
    result = _checks(*DEFAULT)["ode"]["data"]
    failure = result["failure"]
    assert failure["on_error"] == "raise"
    assert "non-finite (nan) at step 0" in failure["error"], failure
    assert "The solver failed in 16 of 16 solve(s)" in failure["error"], failure
    assert result["traces_after_failure"] == 1


def test_sharding_argument_checks_on_one_device():
    mesh = jax.make_mesh((1,), ("data",))
    with pytest.raises(ValueError, match=r"`data='x'` is not an axis of the mesh"):
        neurde.Sharding(mesh, data="x")
    with pytest.raises(ValueError, match=r"give the mesh axis of the batch"):
        neurde.Sharding(mesh)
    with pytest.raises(TypeError, match=r"`mesh` must be a jax.sharding.Mesh"):
        neurde.Sharding("data")  # pyright: ignore[reportArgumentType]
    two = jax.make_mesh((1, 1), ("a", "b"))
    with pytest.raises(ValueError, match=r"name the same mesh axis 'a'"):
        neurde.Sharding(two, data="a", members="a")
    with pytest.raises(ValueError, match=r"`per_example_loss=True` splits the loss over"):
        neurde.Sharding(two, data="a", members="b", per_example_loss=True)
    with pytest.raises(TypeError, match=r"`per_example_loss` must be True or False, got 1"):
        neurde.Sharding(mesh, data="data", per_example_loss=1)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"make_ensemble_step: `per_example_loss=True` is for"):
        neurde.make_ensemble_step(
            lambda m, b, k: jnp.sum(m["w"]),
            optax.sgd(0.1),
            mesh=neurde.Sharding(mesh, data="data", per_example_loss=True),
        )
    with pytest.raises(ValueError, match=r"per-member batches must be stacked on axis 0"):
        neurde.make_ensemble_step(
            lambda m, b, k: jnp.sum(m["w"]),
            optax.sgd(0.1),
            batch_axis=1,
            mesh=neurde.Sharding(two, data="a", members="b"),
        )(
            {"w": jnp.ones((2, 3))},
            neurde.ensemble_init_optimizer(optax.sgd(0.1), {"w": jnp.ones((2, 3))}),
            jnp.ones((4, 2)),
            jr.key(0),
        )


def test_one_device_mesh_equals_no_mesh():
    # The sharded code path on the one device of this process: exact same numbers.
    x = np.asarray(jr.normal(jr.key(0), (32, 3)))
    y = x @ np.array([1.0, -2.0, 0.5], np.float32)

    def loss(model, batch, key):
        del key
        return jnp.mean((batch[0] @ model["w"] - batch[1]) ** 2)

    kw = {"steps": 5, "key": jr.key(1), "optim": optax.adam(0.1), "batch_size": 8}
    ref = neurde.fit({"w": jnp.zeros(3)}, loss, (x, y), progress=False, **kw)
    got = neurde.fit(
        {"w": jnp.zeros(3)}, loss, (x, y), progress=False, mesh=jax.make_mesh((1,), ("d",)), **kw
    )
    np.testing.assert_allclose(got.model["w"], ref.model["w"], rtol=1e-6)
    assert np.abs(np.asarray(ref.model["w"])).max() > 0.1


def test_per_example_loss_on_one_device_equals_no_mesh():
    # The per-device path (`shard_map`, gradient per device, one reduction) on this
    # process's one device, with an aux of a scalar and a per-example array.
    x = np.asarray(jr.normal(jr.key(0), (8, 3)))
    y = x @ np.array([1.0, -2.0, 0.5], np.float32)

    def loss(model, batch, key):
        del key
        err = batch[0] @ model["w"] - batch[1]
        return jnp.mean(err**2), {"mae": jnp.mean(jnp.abs(err)), "err": err}

    optim = optax.adam(0.1)
    layout = neurde.Sharding(jax.make_mesh((1,), ("d",)), data="d", per_example_loss=True)
    model = {"w": jnp.zeros(3)}
    state = neurde.init_optimizer(optim, model)
    want = neurde.make_step(loss, optim)(model, state, (x, y), jr.key(1))
    got = neurde.make_step(loss, optim, mesh=layout)(model, state, (x, y), jr.key(1))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert np.shape(got[3]["err"]) == (8,) and float(got[2]) > 1.0


@pytest.mark.expensive
@pytest.mark.parametrize("kind", ["sde", "stack"])
def test_neural_sde_and_discrete_stack_parallel_equal_unsharded(kind):
    result = _checks("sde", "stack")[kind]
    _assert_equal_training(result)
    if kind == "stack":  # the step builder with a plain 1-D mesh over 8 members
        assert result["member_step"]["rel"] < TOLERANCE
        assert result["member_step"]["traces"] == [1, 0, 0]


@pytest.mark.expensive
def test_a_failing_solve_with_its_own_compilation():
    result = _checks("callbacks")["callbacks"]
    assert result["on_error"] == "raise"
    assert "The maximum number of solver steps was reached" in result["error"]


@pytest.mark.expensive
def test_sharded_inference_equals_unsharded():
    result = _checks("inference")["inference"]
    assert result["ensemble_predict"]["rel"] < TOLERANCE
    assert result["ensemble_predict"]["member_shards"] == 8
    for sampler in ("dpm_solver", "euler_maruyama"):
        r = result[sampler]
        assert r["rel"] < TOLERANCE and r["sharded"], r
        assert r["nfe"][0] == r["nfe"][1]
    # Adaptive solves of the likelihood: the batched step-size control differs in rounding.
    assert result["log_likelihood"]["rel"] < 1e-4 and result["log_likelihood"]["sharded"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.expensive
def test_two_processes_train_like_one(tmp_path):
    sys.path.insert(0, str(HERE))
    import distributed_run  # the runs, their data and settings

    port = _free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, str(HERE / "distributed_run.py"), *map(str, (i, 2, port, tmp_path))],
            env=_env(4),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = [p.communicate(timeout=900)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], logs
    results = [json.loads((tmp_path / f"process-{i}.json").read_text()) for i in range(2)]
    ref = distributed_run.reference()
    for name, like in (("ode", "ode"), ("ode_fast", "ode"), ("ensemble", "ensemble")):
        assert results[0][name].keys() == ref[like].keys()
        for path, got in results[0][name].items():
            # Both processes hold bit-identical gathered arrays ...
            assert got["sha256"] == results[1][name][path]["sha256"], (name, path)
            # ... equal to the single-process, unsharded run (the fast path too).
            want = ref[like][path]
            err = np.max(np.abs(np.asarray(got["values"]) - want)) / np.max(np.abs(want))
            assert err < TOLERANCE, (name, path, err)
    np.testing.assert_allclose(results[0]["ode_loss"], ref["ode_loss"], rtol=TOLERANCE)
    np.testing.assert_allclose(results[0]["ode_fast_loss"], ref["ode_loss"], rtol=TOLERANCE)
    assert results[0]["ensemble_member_devices"] == [0, 1]  # members on both processes
    # Checkpoints written once (process 0), readable, holding the final model.
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["step-000000010.ckpt", "step-000000020.ckpt"]
    last = tmp_path / "checkpoints" / files[-1]
    assert neurde.load_header(last)["step"] == 20
    saved = eqx.filter(neurde.load(last, like=ref["ode_model"]), eqx.is_array)
    for path, leaf in jax.tree_util.tree_flatten_with_path(saved)[0]:
        got = results[0]["ode"][jax.tree_util.keystr(path)]["values"]
        np.testing.assert_array_equal(np.ravel(leaf), np.asarray(got, np.float32))


def _rmse(report: str) -> float:
    line = next(x for x in report.splitlines() if "test RMSE vs clean trajectories" in x)
    return float(line.strip(" |").split("|")[-1])


@pytest.mark.expensive
def test_neurde_run_with_devices_equals_one_device(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    rmse = {}
    for devices in (1, 4):
        out = tmp_path / f"spiral-{devices}"
        args = ["run", "spiral", "--steps", "6", "--trajectories", "20", "--width", "8"]
        args += ["--devices", str(devices), "--out", str(out), "--no-cache", "--no-progress"]
        subprocess.run([sys.executable, "-m", "neurde", *args], env=env, check=True)
        report = (out / "report.md").read_text()
        assert f"| devices | {devices} |" in report.replace("`", "")
        rmse[devices] = _rmse(report)
    assert abs(rmse[4] - rmse[1]) <= 1e-3 * rmse[1], rmse  # the report prints 4 digits
    args = ["run", "architectures", "--steps", "3", "--seeds", "2", "--depths", "2"]
    args += ["--datasets", "digits", "--architectures", "neural-ode", "--devices", "2"]
    args += ["--out", str(tmp_path / "arch"), "--no-cache", "--no-progress"]
    subprocess.run([sys.executable, "-m", "neurde", *args], env=env, check=True)
    assert "neural-ode" in (tmp_path / "arch" / "report.md").read_text()
