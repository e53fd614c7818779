"""`fit` learns the spiral task: a neural ODE recovers held-out clean trajectories."""

import pytest

from neurde.experiments.spiral import SpiralConfig, train


@pytest.mark.slow
def test_fit_learns_spirals_below_threshold():
    # 300 steps, 160 trajectories on [0, 3], seed 0. Threshold: test RMSE against the clean
    # trajectories below 0.15, i.e. under 15% of the constant-prediction baseline (~1.25).
    # (The default 600-step quick run reaches about 0.05.)
    config = SpiralConfig(trajectories=160, steps=300, seed=0)
    result = train(config, progress=False)
    assert result.baseline_rmse > 1.0
    assert result.test_rmse < 0.15, result.test_rmse
    assert result.test_nfe > 0
