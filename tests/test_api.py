"""The public API: what `neurde` re-exports, each with a docstring; import stays light."""

import inspect
import subprocess
import sys

import neurde
import neurde.continuous
import neurde.data
import neurde.diffusion
import neurde.discrete
import neurde.noise
import neurde.stochastic
import neurde.train

PUBLIC_MODULES = [
    neurde,
    neurde.continuous,
    neurde.data,
    neurde.discrete,
    neurde.noise,
    neurde.diffusion,
    neurde.stochastic,
    neurde.train,
]


def _public(module):
    return [name for name in dir(module) if not name.startswith("_")]


def _own_docstring(obj) -> bool:
    """A docstring written for `obj`: not inherited, not dataclass's generated `Name(...)`."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    doc = (doc or "").strip()
    generated = inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(")
    return bool(doc) and not generated


def test_every_public_name_has_a_docstring():
    missing = []
    for module in PUBLIC_MODULES:
        for name in _public(module):
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or callable(obj)):
                continue
            if type(obj).__module__ == "typing":
                continue  # type aliases (`Literal[...]`) cannot carry a docstring

            if not _own_docstring(obj):
                missing.append(f"{module.__name__}.{name}")
    assert not missing, f"public names without a docstring: {missing}"


def test_core_names_are_exported():
    for name in [
        "NeuralODE",
        "NeuralSDE",
        "MLPField",
        "FunctionField",
        "LinearField",
        "AbstractField",
        "RK4",
        "Reversible",
        "Tolerances",
        "trainable",
        "fit",
        "make_step",
        "save",
        "load",
        "make_ensemble",
        "ensemble_predict",
        "GridBrownianPath",
        "solver_stats",
    ]:
        assert hasattr(neurde, name), name


def test_import_does_not_pull_in_matplotlib_or_the_cli():
    code = (
        "import sys, neurde; "
        "bad = [m for m in ('matplotlib', 'neurde.cli', 'neurde.experiments') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
