"""Experiments behind `neurde run NAME`: each module has NAME, DESCRIPTION, add_arguments, run.

Importing this package does not import matplotlib; each experiment imports it when it draws.
"""

from types import ModuleType

from . import architectures, regularizers, samplers, spiral, stochastic, zoo

EXPERIMENTS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (spiral, architectures, regularizers, samplers, zoo, stochastic)
}

__all__ = ["EXPERIMENTS"]
