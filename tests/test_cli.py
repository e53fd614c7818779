"""The `neurde` command line: help lists experiments, a tiny run writes report and figure."""

import subprocess
import sys

import pytest

from neurde.cli import build_parser, main


def test_help_lists_experiments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "--help"])
    assert exit_info.value.code == 0
    assert "spiral" in capsys.readouterr().out


def test_list_command(capsys):
    assert main(["list"]) == 0
    assert "spiral" in capsys.readouterr().out


def test_unknown_experiment_is_an_error(capsys):
    with pytest.raises(SystemExit):
        main(["run", "nonexistent"])
    assert "invalid choice: 'nonexistent'" in capsys.readouterr().err


def test_quick_and_full_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        main(["run", "spiral", "--quick", "--full"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_tiny_spiral_run_writes_report_and_figure(tmp_path):
    out = tmp_path / "spiral"
    args = ["run", "spiral", "--steps", "6", "--trajectories", "20", "--width", "8"]
    assert main([*args, "--out", str(out), "--no-cache", "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert "test RMSE" in report and "spiral.png" in report
    assert (out / "spiral.png").stat().st_size > 10_000


def test_module_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "neurde", "--help"], capture_output=True, text=True, check=True
    )
    assert "run" in out.stdout


def test_tiny_architectures_run_writes_report_and_figure(tmp_path):
    out = tmp_path / "arch"
    args = ["run", "architectures", "--steps", "3", "--seeds", "2", "--depths", "2"]
    args += ["--datasets", "digits", "--architectures", "resnet", "revnet", "neural-ode"]
    assert main([*args, "--out", str(out), "--no-cache", "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    for name in ("resnet", "revnet", "neural-ode", "Neural ODE cost", "architectures.png"):
        assert name in report


def test_tiny_regularizers_run_writes_report_and_figure(tmp_path):
    out = tmp_path / "reg"
    args = ["run", "regularizers", "--steps", "3", "--seeds", "2", "--datasets", "digits"]
    args += ["--regularizers", "none", "rnode", "shake-shake"]
    assert main([*args, "--out", str(out), "--no-cache", "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    for name in ("rnode", "shake-shake", "FGSM 0.1", "test NFE", "regularizers.png"):
        assert name in report
    assert "steer" not in report.split("## Settings")[0]


def test_tiny_samplers_run_writes_report_and_figures(tmp_path):
    out = tmp_path / "samplers"
    args = ["run", "samplers", "--train-steps", "5", "--nfes", "4", "--reference-nfe", "10"]
    args += ["--datasets", "8-gaussians", "digits", "--num-samples", "200"]
    args += ["--samplers", "ddim", "dpm-solver-2", "pf-ode", "--mixtures", "none"]
    assert main([*args, "--out", str(out), "--no-cache", "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    for name in ("dpm-solver-2", "pf-ode", "8-gaussians", "quality_vs_nfe.png", "samples_digits"):
        assert name in report
    assert (out / "samples_digits.png").exists()


def test_zoo_runs_the_chosen_sections_and_writes_a_summary(tmp_path, monkeypatch):
    import types

    from neurde.experiments import zoo
    from neurde.experiments.report import markdown_table

    calls = []

    def section(report, *, size, seed):
        calls.append((size, seed))
        report.add("Fake", markdown_table(["a"], [[1]]))
        return {"accuracy": 0.5}

    fake = types.ModuleType("neurde.experiments.zoo_fake")
    fake.section = section  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "neurde.experiments.zoo_fake", fake)
    monkeypatch.setattr(zoo, "SECTIONS", {"fake": "zoo_fake", "other": "zoo_missing"})
    out = tmp_path / "zoo"
    args = ["run", "zoo", "--only", "fake", "--seed", "3", "--out", str(out), "--no-cache"]
    assert main(args) == 0
    assert calls == [("quick", 3)]
    report = (out / "report.md").read_text()
    assert report.index("## Summary") < report.index("## Fake")
    assert "| fake | accuracy | 0.5 |" in report


def test_tiny_stochastic_run_writes_report_and_figure(tmp_path, monkeypatch, capsys):
    from neurde.experiments import stochastic_sde_net

    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    assert "stochastic" in capsys.readouterr().out

    # The real sde_net section at a tiny size: 5 training steps, 2 paths per prediction.
    tiny = {"steps": 5, "batch": 16, "paths": 2, "hidden": 8, "width": 8}
    monkeypatch.setitem(stochastic_sde_net.SIZES, "quick", tiny)
    out = tmp_path / "stochastic"
    args = ["run", "stochastic", "--only", "sde_net", "--out", str(out), "--no-cache"]
    assert main([*args, "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert report.index("## Summary") < report.index("## SDE-Net on digits")
    for name in ("| sde_net | AUROC vs uniform |", "AUROC vs permuted", "sde_net_uncertainty.png"):
        assert name in report
    assert "Latent SDE" not in report
    assert (out / "sde_net_uncertainty.png").stat().st_size > 10_000
