"""README's Python example runs as written (with fewer training steps)."""

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
    assert float(std.max()) > 0  # independently initialised members disagree
