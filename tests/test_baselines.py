"""Every baseline against its formula, its reference implementation and its own forward pass."""

import math

import numpy as np
import pytest
import torch
from sklearn.covariance import EmpiricalCovariance
from uqbench.methods.ash import ASH, ash
from uqbench.methods.deep_ensemble import DeepEnsemble
from uqbench.methods.early_exit import EarlyExit
from uqbench.methods.energy import Energy, energy
from uqbench.methods.entropy import Entropy
from uqbench.methods.evidential import Evidential, dirichlet_kl_to_uniform, evidential_loss
from uqbench.methods.mahalanobis import Mahalanobis, class_means, min_distance
from uqbench.methods.mc_dropout import MCDropout
from uqbench.methods.msp import MSP
from uqbench.methods.react import ReAct
from uqbench.methods.temperature import Temperature, fit_temperature

from uqbench.backbones.digits_cnn import digits_cnn
from uqbench.errors import ConfigError
from uqbench.recorded_pass import RecordedPass, TapRequest, record_pass
from uqbench.stages.calibrate import calibrate_method

SHAPE = (1, 28, 28)


def _backbone(seed=0):
    torch.manual_seed(seed)
    return digits_cnn(10, SHAPE).eval()


class _Records:
    """DevData stand-in: fixed recorded passes and loaders per split."""

    def __init__(self, train=None, dev=None, mix=None, loaders=None):
        self.records = {"train": train, "dev": dev, "dev_mix": mix}
        self.loaders = loaders or {}

    def record(self, split):
        return self.records[split]

    def loader(self, split):
        return iter(self.loaders[split])


def _ready(method):
    """Mark a method calibrated without fitting (tests of formulas on fixed state)."""
    method.calibrated.fill_(True)
    return method.eval()


def record(backbone, loader, request):
    return record_pass(backbone, loader, request)


RecordRequest = TapRequest
Record = RecordedPass


def _loader(n=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *SHAPE, generator=g)
    y = torch.randint(10, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)


def test_energy_formula():
    z = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    for t in (0.5, 1.0, 2.0):
        expected = -t * torch.log(torch.exp(z / t).sum(-1))
        torch.testing.assert_close(energy(z, t), expected)


def test_ash_shaping_by_hand():
    x = torch.tensor([[4.0, 1.0, 3.0, 2.0]])
    # p = 50: keep k = 4 - 2 = 2 largest (4 and 3).
    torch.testing.assert_close(ash(x, 50, "p"), torch.tensor([[4.0, 0.0, 3.0, 0.0]]))
    torch.testing.assert_close(ash(x, 50, "b"), torch.tensor([[5.0, 0.0, 5.0, 0.0]]))  # 10 / 2
    scale = math.exp(10 / 7)
    torch.testing.assert_close(ash(x, 50, "s"), torch.tensor([[4 * scale, 0, 3 * scale, 0]]))
    # Binarization preserves each example's sum.
    x = torch.rand(5, 64)
    torch.testing.assert_close(ash(x, 90, "b").sum(1), x.sum(1))
    assert ((ash(x, 90, "b") > 0).sum(1) == 64 - round(64 * 0.9)).all()


def test_react_clips_at_the_dev_percentile_then_scores_energy():
    backbone = _backbone()
    method = ReAct(backbone, percentile=90)
    dev = record(backbone, _loader(), RecordRequest())
    calibrate_method(method, _Records(dev=dev))
    threshold = float(np.percentile(dev.out.pooled.numpy().ravel(), 90))
    assert float(method.threshold) == pytest.approx(threshold, rel=1e-5)
    out = method.output(dev.out)
    clipped_logits = backbone.forward_head(dev.out.pooled.clamp(max=threshold))
    torch.testing.assert_close(out.logits, clipped_logits)
    torch.testing.assert_close(out.score, energy(clipped_logits))


def test_mahalanobis_statistics_match_scikit_learn():
    backbone = _backbone()
    train = record(backbone, _loader(300, seed=2), RecordRequest())
    features, labels = train.out.pooled.double(), train.labels
    means = class_means(features, labels, 10)
    centred = features - means[labels]
    reference = EmpiricalCovariance(assume_centered=True).fit(centred.numpy())
    method = Mahalanobis(backbone, variant="mds")
    calibrate_method(method, _Records(train, train, train))
    np.testing.assert_allclose(
        method.precision.numpy(),
        reference.precision_,
        rtol=1e-3,
        atol=1e-3 * np.abs(reference.precision_).max(),
    )
    test = record(backbone, _loader(20, seed=3), RecordRequest())
    f = test.out.pooled.double()
    expected = np.min([reference.mahalanobis((f - means[c]).numpy()) for c in range(10)], axis=0)
    score = min_distance(f, means, torch.tensor(reference.precision_))
    np.testing.assert_allclose(score.numpy(), expected, rtol=1e-8)
    # The device form: whitened features against whitened means, the same distances (float32).
    export = method.device_export()
    whitened = f.float().numpy() @ export.fitted["whiten"].T
    diff = whitened[:, None, :] - export.fitted["whitened_means"][None]
    device = (diff * diff).sum(-1).min(1)
    np.testing.assert_allclose(device, method.score(test.out).numpy(), rtol=1e-3)
    # The paper's variant: diagonal variance, dimension-normalized, class minimum of the sum.
    paper = Mahalanobis(backbone, variant="paper", shrinkage=(0.0,))
    rec = record(backbone, _loader(300, seed=2), paper.record_request())
    calibrate_method(paper, _Records(rec, rec, rec))
    a = rec.out.taps["penultimate"].double()
    var = (a - class_means(a, labels, 10)[labels]).pow(2).mean(0).clamp_min(1e-8)
    torch.testing.assert_close(paper.variance_1.double(), var.to(paper.variance_1).double())


def test_temperature_fit_recovers_a_known_temperature():
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(20_000, 10, generator=g)
    true_t = 2.5
    labels = torch.multinomial((logits / true_t).softmax(-1), 1, generator=g).flatten()
    assert fit_temperature(logits, labels, "lbfgs") == pytest.approx(true_t, rel=0.05)
    assert fit_temperature(logits, labels, "grid") in (2.0, 3.0)


@pytest.mark.parametrize("placement", ["taps", "head"])
def test_mc_dropout_p0_is_deterministic_and_identical_passes_have_zero_information(placement):
    backbone = _backbone()
    x = next(iter(_loader()))[0]
    with torch.no_grad():
        expected = backbone(x).logits.softmax(-1)
    method = _ready(
        MCDropout(backbone, p=0.0, placement=placement, samples=5, score_type="mutual_information")
    )
    out = method(x)
    torch.testing.assert_close(out.probs, expected)
    torch.testing.assert_close(out.score, torch.zeros(len(x)), atol=1e-6, rtol=0)
    entropy_method = _ready(
        MCDropout(_backbone(), p=0.0, placement=placement, samples=3, score_type="entropy")
    )
    torch.testing.assert_close(entropy_method(x).score, Entropy(_backbone())(x).score)


def test_mc_dropout_at_the_taps_samples_the_whole_network():
    backbone = _backbone()
    x = next(iter(_loader()))[0]
    method = _ready(MCDropout(backbone, p=0.3, samples=4, score_type="entropy"))
    probs = method.sample_probs(x, 4)
    assert not torch.allclose(probs[0], probs[1])  # passes differ
    torch.testing.assert_close(method.sample_probs(x, 2), probs[:2])  # first n of N
    with torch.no_grad():
        plain = backbone(x).logits  # outside sampling, the hooks leave the backbone alone
    torch.testing.assert_close(plain, _backbone()(x).logits)
    assert method.cost_facts().forward_passes == int(method.samples_used)


def test_mc_dropout_runs_its_first_stage_once_a_batch_with_the_same_bits():
    """The N passes share the stem (the first tap module, fed the input itself): computed once,
    and the probabilities are bit for bit those of the N passes run one by one."""
    backbone = _backbone()
    x = next(iter(_loader()))[0]
    method = _ready(MCDropout(backbone, p=0.3, samples=4, score_type="entropy"))
    convolutions = {"stem": 0, "mid": 0}
    for name in convolutions:
        conv = getattr(backbone, name)[0][0]
        conv.register_forward_hook(
            lambda *_, n=name: convolutions.__setitem__(n, convolutions[n] + 1)
        )
    with torch.no_grad():
        probs = method.sample_probs(x, 4)
    assert convolutions == {"stem": 1, "mid": 4}
    assert "forward" not in backbone.stem.__dict__  # the module's own forward again
    with torch.no_grad():
        one_by_one = torch.stack([member(x) for member in method.device_export().members])
    assert torch.equal(probs, one_by_one.softmax(-1))
    # A batch the CPU runs in slices: the stem once a slice, the same probabilities.
    size = backbone.cpu_eval_slice
    many = torch.cat([x] * (2 * size // len(x) + 1))
    convolutions.update(stem=0, mid=0)
    with torch.no_grad():
        probs = method.sample_probs(many, 4)
        slices = -(-len(many) // size)
        assert slices == 3 and convolutions == {"stem": slices, "mid": 4 * slices}
        one_by_one = torch.stack([member(many) for member in method.device_export().members])
    assert torch.equal(probs, one_by_one.softmax(-1))


def test_first_stage_once_computes_again_what_changed_in_place():
    from uqbench.methods.mc_dropout import _first_stage_once

    calls = []

    class Double(torch.nn.Module):
        def forward(self, x):
            calls.append(1)
            return 2 * x

    module, x = Double(), torch.ones(3)
    with _first_stage_once([module], x):
        first = module(x)
        assert module(x) is first and len(calls) == 1
        first.add_(1)  # the kept output changed: computed again
        assert torch.equal(module(x), torch.full((3,), 2.0)) and len(calls) == 2
        module(torch.ones(3))  # another input (equal, not the same tensor): computed
        assert module(x[:2]) is module(x[:2]) and len(calls) == 4  # a slice of x: kept
        assert torch.equal(module(x[1:]), torch.full((2,), 2.0)) and len(calls) == 5
        x.mul_(3)  # the input itself changed
        assert torch.equal(module(x), torch.full((3,), 6.0)) and len(calls) == 6
        module(x[:2])  # and so did its slices
        assert len(calls) == 7
    module(x)
    assert len(calls) == 8 and "forward" not in module.__dict__
    own = module.forward  # a forward set on the instance is put back, not removed
    module.forward = own
    with _first_stage_once([module], x):
        assert module.forward is not own
    assert module.__dict__["forward"] is own


@pytest.mark.parametrize("mutual", [False, True])
def test_mc_dropout_passes_with_fixed_masks_are_the_method(mutual):
    """What the device runs for MC dropout at the taps: each pass the network with that pass's
    fixed masks. Together they give the method's probabilities and score (the same masks
    inference uses, the same entropy / information)."""
    from uqbench.deploy.device_score import Ensemble, Output

    backbone = _backbone()
    score_type = "mutual_information" if mutual else "entropy"
    method = _ready(MCDropout(backbone, p=0.3, samples=4, score_type=score_type))
    export = method.device_export()
    assert isinstance(export, Ensemble) and len(export.members) == 4
    assert export.score.mutual_information is mutual
    x = next(iter(_loader()))[0]
    with torch.no_grad():
        expected = method(x)
        logits = [member(x) for member in export.members]
    torch.testing.assert_close(torch.stack(logits).softmax(-1), method.sample_probs(x, 4))
    # The host score reads integer codes: the logits at a fine scale (1e-5), so it computes in
    # float32 what the method computes (its error ~1e-5).
    codes = torch.round(torch.cat(logits, 1) * 1e5).numpy()
    c = logits[0].shape[1]
    layout = [Output(f"member {k} logits", (c,), k * c, 1e-5, 0) for k in range(4)]
    probs, score = export.score.host(codes, layout)
    torch.testing.assert_close(torch.from_numpy(probs), expected.probs, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(
        torch.from_numpy(score).double(), expected.score.double(), atol=1e-4, rtol=1e-3
    )


def test_dropout_masks_are_the_counter_based_hash():
    """The masks against a plain-Python 32-bit implementation of their definition, their keep
    rate, and their independence from the other sites, passes and the batch."""
    from uqbench import dropout_masks as masks

    def mix(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) % 2**32
        x ^= x >> 15
        x = (x * 0x846CA68B) % 2**32
        return x ^ (x >> 16)

    shape, p = (3, 4, 5), 0.3
    mask = masks.keep(shape, 2, 7, p)
    stream = masks.stream(2, 7)
    expected = [
        float(mix((i * 0x9E3779B9 + stream) % 2**32) < round(0.7 * 2**32)) for i in range(60)
    ]
    assert mask.flatten().tolist() == expected
    big = masks.keep((100_000,), 0, 0, p)
    assert abs(float(big.mean()) - 0.7) < 0.01
    assert not torch.equal(masks.keep(shape, 2, 8, p), mask)  # another pass
    assert not torch.equal(masks.keep(shape, 3, 7, p), mask)  # another site
    x = torch.randn(4, *shape)
    torch.testing.assert_close(
        torch.ops.uqbench.dropout(x, 2, 7, p)[1:], torch.ops.uqbench.dropout(x[1:], 2, 7, p)
    )
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        masks.threshold(1.0)


def test_mc_dropout_tunes_n_and_score_on_dev_and_repeats_its_masks():
    backbone = _backbone()
    method = MCDropout(backbone, p=0.3).eval()
    calibrate_method(method, _Records(loaders={"dev_mix": _loader(seed=5)}))
    assert method.tuned()["samples"] in (5, 10)
    assert method.tuned()["score_type"] in ("entropy", "mutual_information")
    x = next(iter(_loader()))[0]
    torch.testing.assert_close(method(x).score, method(x).score)  # seeded masks
    assert method.cost_facts().forward_passes == method.tuned()["samples"]


def test_an_ensemble_of_identical_members_equals_one_member():
    backbone = _backbone()
    ensemble = _ready(DeepEnsemble(backbone, members=3))
    for member in ensemble.members[1:]:
        member.load_state_dict(backbone.state_dict())
    x = next(iter(_loader()))[0]
    out = ensemble(x)
    torch.testing.assert_close(out.probs, backbone(x).logits.softmax(-1))
    torch.testing.assert_close(out.score, Entropy(backbone)(x).score)
    # Members start from different initializations.
    fresh = DeepEnsemble(_backbone(), members=2)
    assert not torch.equal(fresh.members[0].classifier.weight, fresh.members[1].classifier.weight)


def test_ensemble_member_0_is_the_base_and_only_the_others_train():
    from uqbench.method import Needs

    backbone = _backbone()
    ensemble = DeepEnsemble(backbone, members=3)
    assert ensemble.members[0] is backbone
    trainable = {id(p) for group in ensemble.param_groups() for p in group["params"]}
    assert not any(id(p) in trainable for p in backbone.parameters())
    assert all(id(p) in trainable for m in ensemble.members[1:] for p in m.parameters())
    assert DeepEnsemble.needs_for({"members": 3}) == Needs(True, True, "inputs")
    assert DeepEnsemble.needs_for({}) == Needs(True, True, "inputs")  # 5 made, M tuned
    assert DeepEnsemble.needs_for({"members": 1}) == Needs(True, False, "inputs")  # the base
    # Members 1.. are drawn afresh: none keeps a tensor of the (trained) base.
    for member in ensemble.members[1:]:
        assert not torch.equal(member.classifier.weight, backbone.classifier.weight)
    scaled = _backbone()
    scaled.register_parameter("scale", torch.nn.Parameter(torch.ones(1)))
    with pytest.raises(ConfigError, match="scale belong to no layer that has one"):
        DeepEnsemble(scaled, members=2)
    assert len(DeepEnsemble(scaled, members=1).members) == 1  # the base alone: nothing drawn


def test_ensemble_score_is_the_entropy_of_the_mean_not_the_mean_entropy():
    ensemble = _ready(DeepEnsemble(_backbone(), members=2))
    x = next(iter(_loader()))[0]
    probs = ensemble.member_probs(x)
    mean = probs.mean(0)
    torch.testing.assert_close(ensemble(x).score, -(mean * mean.log()).sum(-1))


def test_evidential_loss_against_its_closed_form():
    alpha = torch.tensor([[2.0, 1.5, 4.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([2, 0])
    digamma = torch.special.digamma
    risk = torch.stack([digamma(alpha[i].sum()) - digamma(alpha[i, labels[i]]) for i in range(2)])
    torch.testing.assert_close(evidential_loss(alpha, labels, 0.0), risk.mean())
    # The KL term against torch.distributions, on alpha with the true class's evidence removed.
    kept = torch.tensor([[2.0, 1.5, 1.0], [1.0, 1.0, 1.0]])
    kl = torch.distributions.kl_divergence(
        torch.distributions.Dirichlet(kept), torch.distributions.Dirichlet(torch.ones(3))
    )
    torch.testing.assert_close(dirichlet_kl_to_uniform(kept), kl)
    torch.testing.assert_close(evidential_loss(alpha, labels, 0.5), (risk + 0.5 * kl).mean())
    method = Evidential(_backbone(), score_type="vacuity").eval()
    x = next(iter(_loader()))[0]
    a = method.alpha(method.backbone(x).logits)
    torch.testing.assert_close(method(x).score, 10 / a.sum(-1))


def test_early_exit_averages_exits_and_the_final_classifier():
    method = EarlyExit(_backbone(), exits=("stem", "mid")).eval()
    x = next(iter(_loader()))[0]
    logits = method.all_logits(x)
    assert len(logits) == 3
    torch.testing.assert_close(
        method(x).probs, torch.stack([z.softmax(-1) for z in logits]).mean(0)
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda b: MSP(b),
        lambda b: Entropy(b),
        lambda b: Temperature(b),
        lambda b: Energy(b),
        lambda b: Mahalanobis(b),
        lambda b: Mahalanobis(b, variant="mds"),
        lambda b: ReAct(b),
        lambda b: ASH(b),
        lambda b: ASH(b, mode="s", percentile=65, on="maps"),
    ],
)
def test_the_one_pass_record_scores_like_the_methods_own_forward_pass(build):
    backbone = _backbone()
    method = build(backbone).eval()
    request = method.record_request()
    train = record(backbone, _loader(300, seed=2), request)
    calibrate_method(method, _Records(train, train, train))
    loader = _loader(64, seed=4)
    rec: Record = record(backbone, loader, request)
    from_record = method.output(rec.out)
    x = torch.cat([batch[0] for batch in loader])
    with torch.no_grad():
        direct = method(x)
    torch.testing.assert_close(from_record.score, direct.score, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_record.probs, direct.probs, rtol=1e-4, atol=1e-6)


class _Unnamed(torch.nn.Module):
    """A backbone stand-in that keeps the base class's tap_modules (which names none)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def tap_modules(self):
        from uqbench.backbones.base import Backbone

        return Backbone.tap_modules(self)


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda b: Mahalanobis(b, taps=("mid", "block9")), "mahalanobis needs tap 'block9'"),
        (lambda b: MCDropout(b, samples=0), "method.samples (N) must be >= 1"),
        (
            lambda b: DeepEnsemble(b, members=0),
            "method.members (M) and method.trained must be >= 1",
        ),
        (lambda b: Energy(b, temperatures=(1.0, -2.0)), "method.temperature(s): every value"),
        (lambda b: ReAct(b, percentile=100.0), "method.percentile: every value must be in"),
        (lambda b: ASH(b, percentile=0.0), "method.percentile"),
        (lambda b: Mahalanobis(b, shrinkage=(-1.0,)), "method.shrinkage"),
        (lambda b: MCDropout(b, p=1.0), "method.p must be in [0, 1)"),
        (lambda b: MCDropout(_Unnamed(b)), "does not name its tap modules; MC dropout"),
        (lambda b: ASH(b, mode="x"), "method.mode: expected one of b, p, s, got 'x'"),
        (lambda b: Energy(b, temperature="hot"), "method.temperature: expected"),
    ],
)
def test_bad_baseline_options(build, message):
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        build(_backbone())


def test_temperature_on_a_dev_split_without_errors_stays_1():
    """With every dev example right, NLL falls without end as T -> 0: no finite T to fit."""
    from uqbench.methods.temperature import fit_temperature

    logits = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 0.5]])
    assert fit_temperature(logits, torch.tensor([0, 1, 0])) == 1.0
    fitted = fit_temperature(logits, torch.tensor([0, 1, 1]))  # one error: a finite optimum
    assert fitted != 1.0 and fitted > 0.1
