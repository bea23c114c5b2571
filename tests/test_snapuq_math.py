"""SNAP-UQ's losses and maps against torch.distributions, dense linear algebra and scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from torch import distributions as D
from uqbench.methods.snap_heads import SurprisalHead, lowrank_terms

from uqbench.calibration import fit_isotonic, fit_logistic, isotonic_predict
from uqbench.controller import AbstentionController

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@pytest.fixture(autouse=True)
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _head_with(variant, mu, logvar, **kwargs):
    """A head whose prediction is fixed to (mu, logvar) [B, K, d] (K = 1 but for the mixture),
    to test its scoring."""
    d = mu.shape[-1]
    head = SurprisalHead(4, d, 3, variant, **kwargs)
    if variant != "mixture":
        mu, logvar = mu[:, 0], logvar[:, 0]
    head.predict = lambda previous: (torch.zeros(len(mu), 3), mu, logvar)
    return head


def _inputs(b=6, d=5, k=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(b, d, generator=g)
    mu = torch.randn(b, k, d, generator=g)
    logvar = torch.randn(b, k, d, generator=g).clamp(-2, 2)
    return target, mu, logvar


def test_diagonal_loss_is_the_gaussian_nll_up_to_its_constant():
    target, mu, logvar = _inputs()
    out = _head_with("gaussian", mu, logvar)(torch.zeros(6, 4), target)
    normal = D.Normal(mu[:, 0], torch.exp(0.5 * logvar[:, 0]))
    reference = -normal.log_prob(target).sum(-1) - 5 * HALF_LOG_2PI  # proposition 2.1
    torch.testing.assert_close(out.nll, reference)
    torch.testing.assert_close(out.e, ((target - mu[:, 0]) ** 2 / logvar[:, 0].exp()).sum(-1))


def test_student_t_term_matches_torch_student_t():
    target, mu, logvar = _inputs()
    nu = 3.5
    out = _head_with("student_t", mu, logvar, nu=nu)(torch.zeros(6, 4), target)
    student = D.StudentT(nu, mu[:, 0], torch.exp(0.5 * logvar[:, 0]))
    constant = math.lgamma(nu / 2) - math.lgamma((nu + 1) / 2) + 0.5 * math.log(nu * math.pi)
    torch.testing.assert_close(out.nll, -student.log_prob(target).sum(-1) - 5 * constant)


def test_student_t_tends_to_the_gaussian_as_nu_grows():
    target, mu, logvar = _inputs()
    gaussian = _head_with("gaussian", mu, logvar)(torch.zeros(6, 4), target)
    student = _head_with("student_t", mu, logvar, nu=1e7)(torch.zeros(6, 4), target)
    torch.testing.assert_close(student.nll, gaussian.nll, rtol=1e-5, atol=1e-5)


def test_huber_is_quadratic_inside_delta_and_linear_outside():
    mu = torch.zeros(1, 1, 2)
    logvar = torch.zeros(1, 1, 2)
    target = torch.tensor([[0.5, 3.0]])  # u = 0.5 (inside delta=1), 3 (outside)
    out = _head_with("huber", mu, logvar, delta=1.0)(torch.zeros(1, 4), target)
    expected_rho = 0.5 * 0.5**2 + (1.0 * 3.0 - 0.5)
    torch.testing.assert_close(out.e, torch.tensor([2 * expected_rho]))
    torch.testing.assert_close(out.nll, torch.tensor([expected_rho]))


def test_lowrank_woodbury_and_determinant_lemma_match_dense_algebra():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(7, 6, generator=g)
    logvar = torch.randn(7, 6, generator=g).clamp(-2, 2)
    factor = torch.randn(6, 3, generator=g)
    quad, logdet = lowrank_terms(v, logvar, factor)
    for i in range(7):
        sigma = torch.diag(logvar[i].exp()) + factor @ factor.T
        torch.testing.assert_close(quad[i], v[i] @ torch.linalg.solve(sigma, v[i]))
        torch.testing.assert_close(logdet[i], torch.linalg.slogdet(sigma).logabsdet)
    # The correction only tightens the diagonal model (appendix I, eq. 53).
    assert (quad <= (v**2 / logvar.exp()).sum(-1) + 1e-12).all()


def test_lowrank_head_nll_matches_torch_lowrank_normal():
    target, mu, logvar = _inputs()
    head = _head_with("lowrank", mu, logvar, lowrank_k=2)
    out = head(torch.zeros(6, 4), target)
    dist = D.LowRankMultivariateNormal(mu[:, 0], head.factor.detach(), logvar[:, 0].exp())
    torch.testing.assert_close(out.nll, -dist.log_prob(target) - 5 * HALF_LOG_2PI)


def test_mixture_head_nll_matches_torch_mixture():
    target, mu, logvar = _inputs(k=3)
    head = _head_with("mixture", mu, logvar, mixture_k=3)
    out = head(torch.zeros(6, 4), target)
    logits = head.mix(torch.zeros(6, 3))
    components = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1)
    mixture = D.MixtureSameFamily(D.Categorical(logits=logits), components)
    torch.testing.assert_close(out.nll, -mixture.log_prob(target) - 5 * HALF_LOG_2PI)


@pytest.mark.parametrize("variant", ["gaussian", "student_t", "huber", "lowrank"])
def test_surprisal_is_invariant_to_per_channel_affine_rescaling(variant):
    """Proposition 2.3: a -> s a + t with mu -> s mu + t, sigma -> |s| sigma leaves e unchanged."""
    target, mu, logvar = _inputs()
    s = torch.tensor([0.5, 2.0, -3.0, 1.5, 0.1])
    t = torch.tensor([1.0, -2.0, 0.0, 3.0, 0.5])
    head = _head_with(variant, mu, logvar)
    e = head(torch.zeros(6, 4), target).e
    scaled = _head_with(variant, s * mu + t, logvar + torch.log(s**2))
    if variant == "lowrank":
        scaled.factor = torch.nn.Parameter(s[:, None] * head.factor.detach())  # S Sigma S
    torch.testing.assert_close(scaled(torch.zeros(6, 4), s * target + t).e, e)


def test_isotonic_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 25, 400).astype(float)  # many ties
    y = (rng.random(400) < x / 30).astype(float)
    thresholds, values = fit_isotonic(torch.tensor(x), torch.tensor(y))
    ours = isotonic_predict(thresholds, values, torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, IsotonicRegression().fit_transform(x, y), atol=1e-12)
    assert (np.diff(values.numpy()) > 0).all()  # strictly increasing steps after pooling
    # Right-continuous step function between and outside the fitted points.
    assert isotonic_predict(thresholds, values, torch.tensor([-5.0]))[0] == values[0]
    assert isotonic_predict(thresholds, values, torch.tensor([99.0]))[0] == values[-1]


def test_logistic_matches_scikit_learn_class_balanced():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 2)) * [3.0, 0.3]
    p = 1 / (1 + np.exp(-(x @ [1.2, -4.0] - 1.5)))
    y = (rng.random(500) < p).astype(int)  # imbalanced
    b0, b = fit_logistic(torch.tensor(x), torch.tensor(y))
    reference = LogisticRegression(class_weight="balanced", tol=1e-12, max_iter=10_000).fit(x, y)
    assert b0 == pytest.approx(reference.intercept_[0], abs=1e-6)
    np.testing.assert_allclose(b.numpy(), reference.coef_[0], atol=1e-6)
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(torch.tensor(x), torch.zeros(500))


@pytest.mark.parametrize("budget", [0.05, 0.2])
def test_controller_holds_the_abstention_rate_near_the_budget(budget):
    g = torch.Generator().manual_seed(0)
    stream = torch.rand(20_000, generator=g)
    stream[8_000:10_000] = 0.5 + 0.5 * stream[8_000:10_000]  # a burst of high uncertainty
    decisions = AbstentionController(budget, kappa=0.01, eta=0.05).run(stream)
    assert abs(decisions.float().mean().item() - budget) < 0.01
    calm = decisions[12_000:].float().mean().item()  # settles back after the burst
    assert abs(calm - budget) < 0.02
    with pytest.raises(ValueError, match="budget"):
        AbstentionController(1.5)
