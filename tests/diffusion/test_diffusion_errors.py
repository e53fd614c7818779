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
    with pytest.raises(ValueError, match=r"DDIM: `time_grid` must be 'uniform' .*'logsnr'"):
        nd.DDIM(10, time_grid="log")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"time_grid: `kind` must be .*'edm' .*, got 'log'\."):
        nd.time_grid(VP, 10, "log")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"EDMHeun: `rho` must be > 0, got 0.0"):
        nd.EDMHeun(10, rho=0.0)
    with pytest.raises(ValueError, match=r"EDMHeun: `s_noise` must be > 0, got -1.0"):
        nd.EDMHeun(10, s_noise=-1.0)
    with pytest.raises(ValueError, match=r"ProbabilityFlow: `atol` must be > 0.*1e-5"):
        nd.ProbabilityFlow(atol=jnp.array(-1.0))
    with pytest.raises(ValueError, match=r"`max_steps` must be an integer >= 1, got 0.*raise it"):
        nd.ProbabilityFlow(max_steps=0)


@pytest.mark.parametrize("sde", [VE, SUBVP], ids=["VE", "subVP"])
def test_ancestral_sampling_needs_the_vp_sde(sde):
    with pytest.raises(ValueError, match=r"Ancestral: `sde` must be a VPSDE .*got \w+\. Use `Eul"):
        # The score of this SDE, so that only Ancestral's own check can fire.
        score = nd.GaussianScore(sde, jnp.zeros(2), jnp.eye(2))
        nd.sample(nd.Ancestral(10), score, sde, 4, (2,), key=KEY)


def test_ddpm_schedule_needs_the_vp_sde():
    with pytest.raises(TypeError, match=r"ddpm_schedule: `sde` must be a VPSDE .*got VESDE"):
        nd.ddpm_schedule(VE, 100)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`num_steps` must be an integer >= 2"):
        nd.ddpm_schedule(VP, 1)


def test_wrong_shaped_score_output():
    def bad(t, x, args):
        return jnp.concatenate([x, x])

    shape_error = r"`score_fn` must return an array of the example's shape \(2,\), got shape \(4,\)"
    with pytest.raises(ValueError, match=r"sample_from: " + shape_error):
        nd.sample(nd.DDIM(5), bad, VP, 4, (2,), key=KEY)
    with pytest.raises(ValueError, match=r"log_likelihood: " + shape_error):
        nd.log_likelihood(bad, VP, jnp.ones(2))
    with pytest.raises(ValueError, match=r"dsm_loss: `model` must return .* got shape \(4,\)"):
        nd.dsm_loss(bad, VP, jnp.ones((3, 2)), key=KEY)
    with pytest.raises(TypeError, match=r"log_likelihood: `score_fn` must be callable .*got int"):
        nd.log_likelihood(3, VP, jnp.ones(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"calling score_fn\(t, x, args\) on one example"):
        nd.sample(nd.DDIM(5), lambda t, x: x, VP, 4, (2,), key=KEY)  # type: ignore[arg-type]


def test_stochastic_samplers_need_a_key():
    x_T = jnp.ones((4, 2))
    for sampler in (nd.EulerMaruyama(5), nd.DDIM(5, eta=0.5), nd.EDMHeun(5, churn=1.0)):
        name = type(sampler).__name__
        with pytest.raises(ValueError, match=name + r": `key` must be a PRNG key, got None: "):
            nd.sample_from(sampler, SCORE, VP, x_T)


def test_bad_sample_arguments():
    with pytest.raises(ValueError, match=r"`x_T` must be a batch .*got shape \(2,\)"):
        nd.sample_from(nd.DDIM(5), SCORE, VP, jnp.ones(2))
    with pytest.raises(TypeError, match=r"sample_from: `x_T` must be floating, got dtype int32"):
        nd.sample_from(nd.DDIM(5), SCORE, VP, jnp.ones((4, 2), jnp.int32))
    with pytest.raises(ValueError, match=r"`num_samples` must be an integer >= 1, got 0"):
        nd.sample(nd.DDIM(5), SCORE, VP, 0, (2,), key=KEY)
    with pytest.raises(ValueError, match=r"sample: `shape` must be a tuple of positive integ"):
        nd.sample(nd.DDIM(5), SCORE, VP, 4, (2, 0), key=KEY)
    with pytest.raises(TypeError, match=r"sample_from: `score_fn` must be callable"):
        nd.sample_from(nd.DDIM(5), "score", VP, jnp.ones((4, 2)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`sampler` must be a neurde.diffusion sampler"):
        nd.sample("ddim", SCORE, VP, 4, (2,), key=KEY)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`sde` must be a forward SDE"):
        nd.sample(nd.DDIM(5), SCORE, "vp", 4, (2,), key=KEY)  # type: ignore[arg-type]


def test_bad_loss_options():
    x0 = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"`weighting` must be .*simple loss.*got 'simple'"):
        nd.dsm_loss(SCORE, VP, x0, weighting="simple", key=KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`parameterization` must be 'score' .*got 'eps'"):
        nd.dsm_loss(SCORE, VP, x0, parameterization="eps", key=KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Score: `parameterization` must be .*'noise'"):
        nd.Score(SCORE, VP, "epsilon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"DSMLoss: `time_sampling` must be .*got 'sobol'"):
        nd.DSMLoss(VP, time_sampling="sobol")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`weighting` must be 'likelihood' with time_sampling="):
        nd.DSMLoss(VP, time_sampling="importance", weighting="score")
    with pytest.raises(ValueError, match=r"`x0` must be a batch .*got shape \(2,\)\. For one"):
        nd.dsm_loss(SCORE, VP, jnp.ones(2), key=KEY)
    with pytest.raises(ValueError, match=r"sample_times: `method` must be .*got 'halton'"):
        nd.sample_times(VP, 4, method="halton", key=KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"sample_times: `num` must be an integer >= 1, got 0"):
        nd.sample_times(VP, 0, key=KEY)
    with pytest.raises(TypeError, match=r"dsm_loss: `sde` must be a forward SDE .*got str"):
        nd.dsm_loss(SCORE, "vp", x0, key=KEY)  # type: ignore[arg-type]


def test_bad_sde_parameters():
    between = r"`{0}_min` and `{0}_max` must satisfy 0 < {0}_min < {0}_max, got {0}_min="
    with pytest.raises(ValueError, match=r"VESDE: " + between.format("sigma")):
        nd.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match=r"VPSDE: " + between.format("beta")):
        nd.VPSDE(beta_min=-0.1)
    with pytest.raises(ValueError, match=r"SubVPSDE: `beta_min` and `beta_max` must satisfy"):
        nd.SubVPSDE(beta_min=30.0)
    with pytest.raises(TypeError, match=r"Score: `sde` must be a forward SDE .*got NoneType"):
        nd.Score(SCORE, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"GaussianScore: `mean` and `cov` must have shapes"):
        nd.GaussianScore(VP, jnp.zeros(2), jnp.eye(3))


def test_bad_likelihood_options():
    x = jnp.ones(2)
    with pytest.raises(ValueError, match=r"`key` must be a PRNG key, got None: estimator='hutc"):
        nd.log_likelihood(SCORE, VP, x, estimator="hutchinson")
    with pytest.raises(ValueError, match=r"log_likelihood: `probe` must be .*got 'sphere'"):
        nd.log_likelihood(SCORE, VP, x, estimator="hutchinson", probe="sphere", key=KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`num_probes` must be an integer >= 1, got 0"):
        nd.log_likelihood(SCORE, VP, x, estimator="hutchinson", num_probes=0, key=KEY)
    with pytest.raises(ValueError, match=r"`estimator` must be 'exact' .*got 'approx'"):
        nd.log_likelihood(SCORE, VP, x, estimator="approx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"log_likelihood: `rtol` must be > 0, got 0.0"):
        nd.log_likelihood(SCORE, VP, x, rtol=0.0)
    with pytest.raises(ValueError, match=r"log_likelihood: `atol` must be > 0, got Array"):
        nd.log_likelihood(SCORE, VP, x, atol=jnp.array(-1e-5))
    with pytest.raises(ValueError, match=r"log_likelihood: `max_steps` must be an integer >= 1"):
        nd.log_likelihood(SCORE, VP, x, max_steps=0)
    with pytest.raises(TypeError, match=r"log_likelihood: `x` must be floating, got dtype int32"):
        nd.log_likelihood(SCORE, VP, jnp.ones(2, jnp.int32))


def test_ema_and_score_net_errors():
    with pytest.raises(ValueError, match=r"ema_update: `decay` must lie in \[0, 1\], got 1.5"):
        nd.ema_update(SCORE, SCORE, 1.5)
    other = nd.GaussianScore(VP, jnp.zeros(3), jnp.eye(3))
    with pytest.raises(ValueError, match=r"`ema_model` must have the structure of `model`"):
        nd.ema_update(SCORE, eqx.tree_at(lambda s: s.sde, other, VE), 0.9)
    net = nd.ScoreMLP(2, 8, 1, key=KEY)
    with pytest.raises(ValueError, match=r"ScoreMLP: the input `y` must have shape \(2,\), .*got"):
        net(0.5, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"ScoreMLP: `size` must be an integer >= 1, got 0"):
        nd.ScoreMLP(0, key=KEY)
    with pytest.raises(ValueError, match=r"ScoreConvNet: `channels` must be an integer >= 1"):
        nd.ScoreConvNet(0, key=KEY)
    with pytest.raises(ValueError, match=r"TimeEmbedding: `kind` must be 'sinusoidal' .*got 'x'"):
        nd.TimeEmbedding(4, "x", key=KEY)  # type: ignore[arg-type]
    # ScoreConvNet's input-shape error: tests/diffusion/test_losses.py (it builds one).
    with pytest.raises(ValueError, match=r"TimeEmbedding: `size` must be an even integer"):
        nd.TimeEmbedding(3, key=KEY)
