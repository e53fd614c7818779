"""README's Python examples run as written (with fewer training steps)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    code = blocks[0]
    assert "steps=500" in code and "steps=200" in code
    code = code.replace("steps=500", "steps=3").replace("steps=200", "steps=2")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "spiral.eqx").exists()
    mean, std = namespace["mean"], namespace["std"]
    assert mean.shape == (40, 2) and std.shape == (40, 2)
    assert float(std.max()) > 0  # independently initialized members disagree


def test_readme_noise_and_diffusion_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 4, "README: the core, noise, diffusion and continuous examples"
    header = "import jax, jax.numpy as jnp, jax.random as jr, optax\nimport neurde\n"
    namespace: dict = {}
    exec(compile(header + blocks[1] + blocks[2], str(README), "exec"), namespace)
    assert namespace["y"].shape == (4,) and namespace["logits"].shape == (10,)
    assert abs(float(namespace["logits"].sum()) - 1) < 1e-5  # averaged probabilities
    samples, nfe = namespace["samples"], namespace["nfe"]
    assert samples.shape == (1024, 2) and int(nfe) == 20  # 10 steps of order 2


def test_readme_continuous_family_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    header = (
        "import jax, jax.numpy as jnp, jax.random as jr\nimport neurde\nfrom neurde import noise\n"
    )
    namespace: dict = {}
    exec(compile(header + blocks[3], str(README), "exec"), namespace)
    assert namespace["aug"](namespace["jnp"].ones(1)).shape == (1,)
    energy = namespace["energy"]
    assert energy.shape == (50,) and float(energy.max() - energy.min()) < 0.1 * float(
        abs(energy).max() + 1
    )
    assert namespace["x"].shape == (2,) and namespace["log_p"].shape == ()
    assert float(namespace["fm_loss"]) > 0
