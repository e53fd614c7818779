"""Every bad input to neurde.diffusion raises an error that names the argument and the fix."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import neurde.diffusion as nd

VP, VE, SUBVP = nd.VPSDE(), nd.VESDE(), nd.SubVPSDE()
SCORE = nd.GaussianScore(VP, jnp.zeros(2), jnp.eye(2))
KEY = jr.key(0)


@pytest.mark.parametrize("t", [0.0, -0.1, 1.5])
def test_time_outside_the_horizon(t):
    with pytest.raises(ValueError, match=r"time `t` must lie in \(0, 1\].*got t="):
        VP.marginal(jnp.ones(2), t)
    with pytest.raises(ValueError, match=r"denoising_score_matching: the time `t` must lie"):
        nd.denoising_score_matching(SCORE, VP, jnp.ones(2), t, key=KEY)


def test_traced_time_outside_the_horizon_is_caught_at_run_time():
    fn = jax.jit(lambda t: nd.denoising_score_matching(SCORE, VP, jnp.ones(2), t, key=KEY))
    with pytest.raises(Exception, match=r"the time `t` must lie in \(0, 1\]"):
        jax.block_until_ready(fn(jnp.asarray(1.5)))


@pytest.mark.parametrize("eps", [0.0, -1e-3, 1.0])
def test_eps_must_lie_in_zero_one(eps):
    with pytest.raises(ValueError, match=r"dsm_loss: `eps`.*in \(0, 1\), got"):
        nd.dsm_loss(SCORE, VP, jnp.ones((4, 2)), eps=eps, key=KEY)
    with pytest.raises(ValueError, match=r"sample_times: `eps`"):
        nd.sample_times(VP, 4, eps=eps, key=KEY)
    with pytest.raises(ValueError, match=r"log_likelihood: `eps`"):
        nd.log_likelihood(SCORE, VP, jnp.ones(2), eps=eps)
    with pytest.raises(ValueError, match=r"DDIM: `eps`.*eps=1e-3"):
        nd.DDIM(10, eps=eps)
    with pytest.raises(ValueError, match=r"time_grid: `eps`"):
        nd.time_grid(VP, 10, eps=eps)


@pytest.mark.parametrize(
    "make",
    [
        lambda n: nd.EulerMaruyama(n),
        lambda n: nd.Ancestral(n),
        lambda n: nd.PredictorCorrector(n),
        lambda n: nd.DDIM(n),
        lambda n: nd.DPMSolver(n),
        lambda n: nd.EDMHeun(n),
        lambda n: nd.PredictorCorrector(10, corrector_steps=n),
        lambda n: nd.ProbabilityFlow(max_steps=n),
        lambda n: nd.time_grid(VP, n),
    ],
)
@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_steps_must_be_a_positive_integer(make, steps):
    with pytest.raises(ValueError, match=r"must be an integer >= 1, got"):
        make(steps)


def test_bad_sampler_hyperparameters():
    with pytest.raises(ValueError, match=r"DPMSolver: `order` must be 1, 2 or 3, got 4"):
        nd.DPMSolver(10, order=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"DDIM: `eta` must lie in \[0, 1\], got 1.5"):
        nd.DDIM(10, eta=1.5)
    with pytest.raises(ValueError, match=r"EDMHeun: `churn` must be >= 0"):
        nd.EDMHeun(10, churn=-1.0)
    with pytest.raises(ValueError, match=r"PredictorCorrector: `snr` must be > 0"):
        nd.PredictorCorrector(10, snr=0.0)
    with pytest.raises(ValueError, match=r"ProbabilityFlow: `rtol` must be > 0"):
        nd.ProbabilityFlow(rtol=0.0)
    with pytest.raises(ValueError, match=r"unknown `time_grid='log'`.*'logsnr'"):
        nd.DDIM(10, time_grid="log")  # type: ignore[arg-type]


@pytest.mark.parametrize("sde", [VE, SUBVP], ids=["VE", "subVP"])
def test_ancestral_sampling_needs_the_vp_sde(sde):
    with pytest.raises(ValueError, match=r"Ancestral: .*VP SDE only, got sde=.*EulerMaruyama"):
        nd.sample(nd.Ancestral(10), SCORE, sde, 4, (2,), key=KEY)


def test_ddpm_schedule_needs_the_vp_sde():
    with pytest.raises(TypeError, match=r"ddpm_schedule: .*VP SDE; got VESDE"):
        nd.ddpm_schedule(VE, 100)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`num_steps` must be an integer >= 2"):
        nd.ddpm_schedule(VP, 1)


def test_wrong_shaped_score_output():
    def bad(t, x, args):
        return jnp.concatenate([x, x])

    with pytest.raises(ValueError, match=r"sample_from: score_fn returns shape \(4,\) for an"):
        nd.sample(nd.DDIM(5), bad, VP, 4, (2,), key=KEY)
    with pytest.raises(ValueError, match=r"log_likelihood: score_fn returns shape \(4,\)"):
        nd.log_likelihood(bad, VP, jnp.ones(2))
    with pytest.raises(ValueError, match=r"dsm_loss: model returns shape \(4,\)"):
        nd.dsm_loss(bad, VP, jnp.ones((3, 2)), key=KEY)
    with pytest.raises(ValueError, match=r"calling score_fn\(t, x, args\) on one example"):
        nd.sample(nd.DDIM(5), lambda t, x: x, VP, 4, (2,), key=KEY)


def test_stochastic_samplers_need_a_key():
    x_T = jnp.ones((4, 2))
    for sampler in (nd.EulerMaruyama(5), nd.DDIM(5, eta=0.5), nd.EDMHeun(5, churn=1.0)):
        with pytest.raises(ValueError, match=r"is stochastic .* needs a key: pass `key="):
            nd.sample_from(sampler, SCORE, VP, x_T)


def test_bad_sample_arguments():
    with pytest.raises(ValueError, match=r"`x_T` must be a batch"):
        nd.sample_from(nd.DDIM(5), SCORE, VP, jnp.ones(2))
    with pytest.raises(ValueError, match=r"`num_samples` must be an integer >= 1"):
        nd.sample(nd.DDIM(5), SCORE, VP, 0, (2,), key=KEY)
    with pytest.raises(TypeError, match=r"`sampler` must be a neurde.diffusion sampler"):
        nd.sample("ddim", SCORE, VP, 4, (2,), key=KEY)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`sde` must be a forward SDE"):
        nd.sample(nd.DDIM(5), SCORE, "vp", 4, (2,), key=KEY)  # type: ignore[arg-type]


def test_bad_loss_options():
    x0 = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"unknown `weighting='simple'`.*DDPM's simple loss"):
        nd.dsm_loss(SCORE, VP, x0, weighting="simple", key=KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown `parameterisation='eps'`.*'noise'"):
        nd.dsm_loss(SCORE, VP, x0, parameterisation="eps", key=KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown `time_sampling='sobol'`"):
        nd.DSMLoss(VP, time_sampling="sobol")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"time_sampling='importance'.*weighting='likelihood'"):
        nd.DSMLoss(VP, time_sampling="importance", weighting="score")
    with pytest.raises(ValueError, match=r"`x0` must be a batch"):
        nd.dsm_loss(SCORE, VP, jnp.ones(2), key=KEY)
    with pytest.raises(ValueError, match=r"unknown `method='halton'`"):
        nd.sample_times(VP, 4, method="halton", key=KEY)  # type: ignore[arg-type]


def test_bad_sde_parameters():
    with pytest.raises(ValueError, match=r"VESDE: needs 0 < sigma_min < sigma_max"):
        nd.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match=r"VPSDE: needs 0 < beta_min < beta_max"):
        nd.VPSDE(beta_min=-0.1)
    with pytest.raises(ValueError, match=r"SubVPSDE: needs 0 < beta_min < beta_max"):
        nd.SubVPSDE(beta_min=30.0)
    with pytest.raises(TypeError, match=r"Score: `sde` must be a forward SDE"):
        nd.Score(SCORE, None)  # type: ignore[arg-type]


def test_bad_likelihood_options():
    with pytest.raises(ValueError, match=r"trace='hutchinson' draws random probes and needs"):
        nd.log_likelihood(SCORE, VP, jnp.ones(2), trace="hutchinson")
    with pytest.raises(ValueError, match=r"unknown `probe='sphere'`"):
        nd.log_likelihood(SCORE, VP, jnp.ones(2), trace="hutchinson", probe="sphere", key=KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown `trace='approx'`"):
        nd.log_likelihood(SCORE, VP, jnp.ones(2), trace="approx")  # type: ignore[arg-type]


def test_ema_and_score_net_errors():
    with pytest.raises(ValueError, match=r"ema_update: `decay` must lie in \[0, 1\], got 1.5"):
        nd.ema_update(SCORE, SCORE, 1.5)
    other = nd.GaussianScore(VP, jnp.zeros(3), jnp.eye(3))
    with pytest.raises(ValueError, match=r"different structures"):
        nd.ema_update(SCORE, eqx.tree_at(lambda s: s.sde, other, VE), 0.9)
    net = nd.ScoreMLP(2, 8, 1, key=KEY)
    with pytest.raises(ValueError, match=r"ScoreMLP: the input has shape \(2, 2\)"):
        net(0.5, jnp.ones((2, 2)))
    # ScoreConvNet's input-shape error: tests/diffusion/test_losses.py (it builds one).
    with pytest.raises(ValueError, match=r"TimeEmbedding: `size` must be an even integer"):
        nd.TimeEmbedding(3, key=KEY)
