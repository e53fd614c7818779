import inspect

import neurde.data

_PUBLIC = {
    "DENSITIES",
    "checkerboard",
    "eight_gaussians",
    "two_moons",
    "Classification",
    "Trajectories",
    "digits",
    "mnist1d",
    "irregular",
    "lotka_volterra",
    "lotka_volterra_field",
    "lotka_volterra_invariant",
    "masked_mse",
    "minibatches",
    "ornstein_uhlenbeck",
    "oscillator",
    "oscillator_field",
    "ou_mean",
    "ou_variance",
    "random_mask",
    "spiral",
    "spiral_field",
    # The data of the continuous family (neurde.continuous).
    "concentric_annuli",
    "mass_spring",
    "mass_spring_energy",
    "pendulum",
    "pendulum_energy",
    "periodic",
    "irregular_series",
    "spiral_directions",
    "DENSITY_LOG_PROBS",
    "checkerboard_log_prob",
    "eight_gaussians_log_prob",
    "two_moons_log_prob",
    "data_cross_entropy",
}


def test_public_api_is_documented():
    exported = {
        name
        for name, value in vars(neurde.data).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert exported == _PUBLIC
    for name in _PUBLIC:
        doc = inspect.getdoc(getattr(neurde.data, name))
        assert doc and len(doc.splitlines()[0]) > 10, name


def test_key_is_keyword_only_and_last():
    for name in [
        "spiral",
        "oscillator",
        "lotka_volterra",
        "ornstein_uhlenbeck",
        "minibatches",
        "random_mask",
        "irregular",
        "two_moons",
        "checkerboard",
        "eight_gaussians",
        "concentric_annuli",
        "mass_spring",
        "pendulum",
        "periodic",
        "spiral_directions",
        "data_cross_entropy",
    ]:
        parameters = list(inspect.signature(getattr(neurde.data, name)).parameters.values())
        assert parameters[-1].name == "key", name
        assert parameters[-1].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameters[-1].default is inspect.Parameter.empty, name
