"""One process of the two-process `jax.distributed` test in `tests/train/test_sharding.py`.

    python tests/train/distributed_run.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR

Each process has 4 host CPU devices; together they form one mesh of 8 (CPU collectives over
Gloo). Both train the same runs with `neurde.fit` and write, per gathered array, its SHA-256
and values to `OUT_DIR/process-<id>.json`: a data-parallel adaptive `NeuralODE` (batch split
over all 8 devices, checkpointed: only process 0 writes), the same run with
`per_example_loss=True` (a local solver loop per device) and a member-parallel ensemble of
discrete stacks (members split over the processes).
"""

import hashlib
import json
import os
import pathlib
import sys

if __name__ == "__main__":  # before JAX starts; not when the test imports `reference`
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
from jax.experimental import multihost_utils

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import sharding_checks as checks

import neurde


def summary(tree) -> dict:
    """`{path: {"sha256", "values"}}` of every array, gathered from both processes."""
    out = {}
    arrays = eqx.filter(tree, eqx.is_array)
    for path, leaf in jax.tree_util.tree_flatten_with_path(arrays)[0]:
        host = np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        out[jax.tree_util.keystr(path)] = {
            "sha256": hashlib.sha256(np.ascontiguousarray(host).tobytes()).hexdigest(),
            "values": host.astype(np.float64).ravel().tolist(),
        }
    return out


def main(process_id: int, num_processes: int, port: int, out_dir: pathlib.Path) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes, process_id)
    assert len(jax.devices()) == 4 * num_processes and len(jax.local_devices()) == 4
    common = checks.fit_arguments()
    data = checks.data()

    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    model = checks.make_ode(jr.key(0))
    ode = neurde.fit(
        model,
        checks.Counted("ode"),
        data,
        mesh=neurde.Sharding(mesh, data="data"),
        checkpoint_dir=out_dir / "checkpoints",
        checkpoint_every=10,
        **common,
    )
    # The same run on the fast path: one local solver loop per device (8 over 2 processes),
    # one gradient reduction per step.
    fast = neurde.fit(
        model,
        checks.Counted("ode"),
        data,
        mesh=neurde.Sharding(mesh, data="data", per_example_loss=True),
        **common,
    )
    ensemble = neurde.make_ensemble(checks.make_stack, checks.MEMBERS, key=jr.key(3))
    layout = neurde.Sharding(
        jax.make_mesh((num_processes, 4), ("members", "data")), data="data", members="members"
    )
    stacks = neurde.fit(
        ensemble, checks.Counted("stack"), data, ensemble=True, mesh=layout, **common
    )
    result = {
        "ode": summary(ode.model),
        "ode_loss": np.asarray(ode.history.loss, np.float64).tolist(),
        "ode_fast": summary(fast.model),
        "ode_fast_loss": np.asarray(fast.history.loss, np.float64).tolist(),
        "ensemble": summary(stacks.model),
        "ensemble_member_devices": sorted(
            {d.process_index for d in jax.tree.leaves(stacks.model)[0].sharding.device_set}
        ),
    }
    (out_dir / f"process-{process_id}.json").write_text(json.dumps(result))
    jax.distributed.shutdown()


def reference() -> dict:
    """The same runs on one process and one device, unsharded."""
    common = checks.fit_arguments()
    data = checks.data()
    ode = neurde.fit(checks.make_ode(jr.key(0)), checks.Counted("ode"), data, **common)
    ensemble = neurde.make_ensemble(checks.make_stack, checks.MEMBERS, key=jr.key(3))
    stacks = neurde.fit(ensemble, checks.Counted("stack"), data, ensemble=True, **common)
    values = {}
    for name, tree in (("ode", ode.model), ("ensemble", stacks.model)):
        arrays = eqx.filter(tree, eqx.is_array)
        values[name] = {
            jax.tree_util.keystr(p): np.asarray(x, np.float64).ravel()
            for p, x in jax.tree_util.tree_flatten_with_path(arrays)[0]
        }
    values["ode_loss"] = np.asarray(ode.history.loss, np.float64)
    values["ode_model"] = ode.model
    return values


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), pathlib.Path(sys.argv[4]))
