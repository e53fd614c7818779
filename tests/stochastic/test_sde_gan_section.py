"""The `sde_gan` section of `neurde run stochastic`: a tiny run writes its table and figure,
and its Wasserstein distance is the 1-D W1 of two samples."""

import numpy as np
import pytest
import scipy.stats

from neurde.cli import main
from neurde.experiments import stochastic_sde_gan


def test_w1_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(0.3, 2.0, size=200)
    assert stochastic_sde_gan.w1(a, b) == pytest.approx(scipy.stats.wasserstein_distance(a, b))
    assert stochastic_sde_gan.w1(a, a + 0.25) == pytest.approx(0.25)


def test_unknown_size_is_an_error():
    with pytest.raises(ValueError, match=r"`size` must be one of \['quick', 'full'\]"):
        stochastic_sde_gan.train_sde_gan("medium")


# About 35 s on one loaded core, nearly all of it compiling the GAN step.
@pytest.mark.slow
def test_tiny_sde_gan_run_writes_report_and_figure(tmp_path, monkeypatch):
    # The real section at a tiny size: 64 paths, 4 steps of batch 8, small networks.
    tiny = {"paths": 64, "steps": 4, "batch": 8, "hidden": 4, "width": 4, "g_lr": 1e-3,
            "d_lr": 4e-3}  # fmt: skip
    monkeypatch.setitem(stochastic_sde_gan.SIZES, "quick", tiny)
    out = tmp_path / "stochastic"
    args = ["run", "stochastic", "--only", "sde_gan", "--out", str(out), "--no-cache"]
    assert main([*args, "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert report.index("## Summary") < report.index("## SDE-GAN on Ornstein–Uhlenbeck")
    assert "| t | W1 untrained | W1 trained | ratio | W1 floor (fresh OU sample) |" in report
    assert "| sde_gan | W1 ratio t=2 |" in report and "SDE-Net" not in report
    assert "sde_gan_marginals.png" in report
    assert (out / "sde_gan_marginals.png").stat().st_size > 10_000
    # The table's rows are the three check times with W1 values: untrained, trained, their
    # ratio, the floor. Two independent samples of 64 exact OU values differ by a W1 of a
    # few hundredths (the floor); an untrained generator is much further away.
    rows = [line for line in report.splitlines() if line.startswith(("| 0.5 |", "| 1 |", "| 2 |"))]
    assert len(rows) == 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        before, after, ratio, floor = float(cells[1]), float(cells[2]), cells[3], float(cells[4])
        # The cells are rounded to 3 decimals, the ratio computed before rounding.
        assert ratio.endswith("x") and float(ratio[:-1]) == pytest.approx(before / after, rel=0.05)
        assert 0 < floor < 0.2 and before > floor
