"""The grid study of issue 16 (`neurde.experiments.samplers_mixture.grid_study`).

Its fitted grid must be chosen without looking at the evaluation draws: among the fitted
samplers it keeps the one with the lowest loss on the fitting draws, and `fit_top=None`
fits every sampler. Checked on the 2-D mixture with small settings (float64).
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde.diffusion as nd
from neurde.experiments import samplers_mixture as mixture_study

VP = nd.VPSDE()


# About 23 s of CPU (the float64 reference and exact-flow solves compile): kept out of CI.
@pytest.mark.expensive
def test_grid_study_fits_every_sampler_and_keeps_the_lowest_fitting_loss():
    samplers = {
        "ddim": lambda n, g: nd.DDIM(steps=n, time_grid=g),
        "dpm-solver-2m": lambda n, g: nd.DPMSolverMultistep(steps=n, order=2, time_grid=g),
    }
    with jax.enable_x64(True):
        mixture = mixture_study.make_mixture("2d", VP)
        x_T = VP.sample_prior(jr.key(0), (64, 2), jnp.float64)
        evaluation = {"x_T": x_T, "exact": mixture_study._Exact(mixture, x_T, 1e-3)}
        study = mixture_study.grid_study(
            mixture, samplers, 5, evaluation, iterations=30, batches=2, batch_size=16,
            fit_top=None,
        )  # fmt: skip
    assert set(study["all_fitted"]) == set(samplers)
    fitting = study["fitting_rms"]
    kept, start = study["optimized_sampler"]
    assert kept == min(fitting, key=fitting.__getitem__), study
    assert study["optimized"] == study["all_fitted"][kept]
    fit = study["fit"]
    np.testing.assert_allclose(fitting[kept], np.sqrt(float(fit.final_loss)), rtol=1e-12)
    # The fit starts from the kept sampler's best fixed grid and lowers the fitting loss.
    assert float(fit.final_loss) < float(fit.initial_loss), fit
    best_fixed = min(e for (name, _), e in study["fixed"].items() if name == kept)
    assert study["fixed"][(kept, start)] == best_fixed
    # Observed (64 evaluation draws, 32 fitting draws): DPM-Solver-2M kept (fitting RMS
    # 0.065 against DDIM's 0.100), from t^(1/4); its fitted grid 0.203 against 0.243 on it.
    assert study["optimized"] < best_fixed, study
