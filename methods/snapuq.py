"""``snapuq``: SNAP-UQ, self-supervised next-activation prediction (the suite's reference method).

Tiny heads at the taps ``S`` (default ``mid`` and ``penultimate``) predict each tap's pooled
activation from a low-rank projection of the tap before it (``methods/snap_heads.py``). Training
adds their depth-wise NLL to the classifier's loss (eq. 4-5, 26-28)::

    L = L_clf + lambda_SS * L_SS + lambda_reg * R
    L_SS = mean_x sum_l omega_l * nll_l(x) / d_l          omega: uniform, or 1/Var(e_bar_l)
    R = alpha_var * sum_l |log sigma_l^2|_1 + alpha_wd * ||theta_heads||^2

with a linear warm-up of lambda_SS over ``ramp_epochs`` (or the adaptive rule of G.4), optional
detaching of the tapped activations, global gradient clipping, and fake int8 quantization of the
heads in the last ``qat_fraction`` of epochs (the deploy stage's per-row weight rule and its
256 log-variance levels, so the firmware computes what training simulated). At inference, one
pass gives (eq. 8-11)::

    e_bar_l = e_l / d_l,   S(x) = sum_l w_l e_bar_l  (w = omega / |S|, sums to 1)
    m(x) = alpha (1 - max p) + (1 - alpha) (1 - (p_(1) - p_(2)))
    U(x) = sigmoid(b0 + b1 S + b2 m)          mapping=logistic (class-balanced, dev mix ID + CID)
         = iso(gamma S + (1 - gamma) m)       mapping=isotonic (PAV, clipped to [1e-4, 1 - 1e-4])
         = S                                  mapping=none

``label_free=true`` drops the confidence term (b2 = 0, gamma = 1). The score ranks as U: higher
means more uncertain. With the logistic map the score is U's logit ``b0 + b1 S + b2 m`` in
float64 (U itself is in ``extras["U"]``): a sigmoid saturates to exactly 1.0 for confident
errors and would tie them, losing their ranking. ``posthoc=true`` starts from the cached base
classifier, freezes it and trains only the heads.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from uqbench.methods.snap_heads import Surprisal, SurprisalHead, Variant

from uqbench.backbones.base import Backbone, BackboneOutput, count_macs
from uqbench.calibration import fit_isotonic, fit_logistic, isotonic_predict
from uqbench.errors import CalibrationError, ConfigError, TrainingError
from uqbench.method import CostFacts, Needs, UQMethod, UQOutput
from uqbench.tuning import auroc_objective, grid

ISOTONIC_CLIP = 1e-4
GAMMA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
ADAPTIVE_TARGET, ADAPTIVE_BOUNDS, ADAPTIVE_EMA = 0.1, (1e-4, 1e-2), 0.9


def confidence_blend(logits: Tensor, alpha: float) -> Tensor:
    """m(x) of eq. 10: alpha (1 - max p) + (1 - alpha) (1 - margin), in [0, 1]."""
    top2 = logits.softmax(-1).topk(min(2, logits.shape[-1]), dim=-1).values
    margin = top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0)
    return alpha * (1 - top2[:, 0]) + (1 - alpha) * (1 - margin)


class SNAPUQ(UQMethod):
    """SNAP-UQ; every argument is an override (``method.rank=32``). See the module docstring.

    Args:
        taps: tap names; each is predicted from the tap before it in the backbone.
        rank: projector rank r (paper: 32-128). Bounded by dim(a_{l-1}) = C*H*W as in eq. 1.
            The projector is linear in the pooled channels, so ranks above the predecessor's
            channel count C add parameters but no information: ``tuned()`` reports the
            effective rank min(r, C).
        variant: ``gaussian`` | ``student_t`` (``nu``) | ``huber`` (``delta``) | ``lowrank``
            (``lowrank_k``) | ``mixture`` (``mixture_k``).
        lambda_ss, ramp_epochs: auxiliary weight and its linear warm-up.
        adaptive_lambda: update lambda_SS every step to hold the gradient-norm ratio
            lambda ||grad L_SS|| / ||grad L_clf|| at 0.1 (EMA 0.9, clipped to [1e-4, 1e-2]).
        lambda_reg, alpha_var, alpha_wd: regularizer weights (R above).
        tap_weighting: ``uniform`` or ``inverse_variance`` (1/Var(e_bar_l) on dev).
        detach: stop gradients from L_SS into the backbone (the tapped activations are constants
            for the auxiliary loss).
        grad_clip: global L2 gradient-norm clip; 0 disables it (the paper's MNIST recipe; it
            clips at 1.0 on CIFAR-10).
        mapping, alpha, gamma, label_free: the map from (S, m) to U; ``gamma=None`` tunes it on
            the dev mix from {0, .25, .5, .75, 1} by AUROC.
        posthoc: start from the cached base classifier, freeze it, train only the heads.
        qat_fraction: fraction of final epochs with fake int8 heads (0 disables).
    """

    def __init__(
        self,
        backbone: Backbone,
        taps: tuple[str, ...] = ("mid", "penultimate"),
        rank: int = 64,
        variant: Variant = "gaussian",
        nu: float = 5.0,
        delta: float = 1.0,
        lowrank_k: int = 4,
        mixture_k: int = 2,
        lambda_ss: float = 5e-3,
        ramp_epochs: int = 5,
        adaptive_lambda: bool = False,
        lambda_reg: float = 1e-4,
        alpha_var: float = 1e-4,
        alpha_wd: float = 5e-4,
        tap_weighting: Literal["uniform", "inverse_variance"] = "uniform",
        detach: bool = False,
        grad_clip: float = 0.0,
        mapping: Literal["logistic", "isotonic", "none"] = "logistic",
        alpha: float = 0.5,
        gamma: float | None = None,
        label_free: bool = False,
        posthoc: bool = False,
        qat_fraction: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        _check_options(nu, delta, lowrank_k, mixture_k, alpha, gamma, qat_fraction, lambda_ss)
        self.taps = tuple(taps)
        self.options = {
            "variant": variant,
            "lambda_ss": lambda_ss,
            "ramp_epochs": ramp_epochs,
            "adaptive_lambda": adaptive_lambda,
            "lambda_reg": lambda_reg,
            "alpha_var": alpha_var,
            "alpha_wd": alpha_wd,
            "tap_weighting": tap_weighting,
            "detach": detach,
            "grad_clip": grad_clip,
            "mapping": mapping,
            "alpha": alpha,
            "gamma": gamma,
            "label_free": label_free,
            "qat_fraction": qat_fraction,
        }
        self.posthoc_mode = posthoc
        if posthoc:  # the runner passes the trained base classifier: it stays as it is
            backbone.requires_grad_(False)
        shapes = backbone.tap_shapes()
        self.heads = nn.ModuleDict()
        self.in_channels: dict[str, int] = {}
        for tap in self.taps:
            previous = _predecessor(backbone, tap)
            c_in, dim = shapes[previous][0], math.prod(shapes[previous])
            if not 1 <= rank <= dim:
                raise ConfigError(
                    f"method.rank={rank} is invalid for tap {tap!r}: it projects {previous!r}, "
                    f"whose activation has {dim} values ({'x'.join(map(str, shapes[previous]))}); "
                    f"the rank must be in 1..{dim} (paper eq. 1: r << dim(a_(l-1)))"
                )
            self.in_channels[tap] = c_in
            self.heads[tap] = SurprisalHead(
                c_in, shapes[tap][0], rank, variant, nu, delta, lowrank_k, mixture_k
            )
        n = len(self.taps)
        self.register_buffer("tap_weights", torch.full((n,), 1.0 / n))  # w_l, sums to 1
        dims = [float(self.heads[t].d) for t in self.taps]
        self.register_buffer("tap_dims", torch.tensor(dims), persistent=False)
        self.register_buffer("lambda_now", torch.tensor(float(lambda_ss)))
        self.register_buffer("ratio_ema", torch.tensor(math.nan))
        self.register_buffer("map_coef", torch.tensor([0.0, 1.0, 0.0]))  # b0, b1, b2
        # What the score is made of: each part alone through its own logistic map on the dev
        # mix (rows: the names of variant_names(), columns: intercept, slope).
        self.register_buffer("variant_coef", torch.zeros(len(self.variant_names()), 2))
        self.register_buffer("iso_x", torch.zeros(0))
        self.register_buffer("iso_y", torch.zeros(0))
        self.register_buffer("gamma_used", torch.tensor(1.0 if gamma is None else gamma))
        self._dev_stats: dict[str, list[Tensor]] = {}
        self._l_ss_sum, self._l_ss_steps = torch.zeros(()), 0
        self.diagnostics: dict[str, Any] = {}

    # ----------------------------------------------------------------- modes
    @classmethod
    def needs_for(cls, options: dict[str, Any]) -> Needs:
        return Needs(base=bool(options.get("posthoc", False)), trains=True, scores_from="inputs")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning restores saved module modes around validation, so enforce this every batch.
        if self.posthoc_mode:
            self.backbone.eval()  # frozen base: batch-norm statistics stay as trained

    # ----------------------------------------------------------------- surprisal
    def surprisal(self, out: BackboneOutput) -> dict[str, Surprisal]:
        """Per tap: the head's NLL and surprisal for the pooled activations of one pass."""
        detach = self.options["detach"]
        pooled = {"penultimate": out.pooled}  # the backbone pooled it already
        result = {}
        for tap, head in self.heads.items():
            previous_tap = _predecessor(self.backbone, tap)
            previous = pooled.get(previous_tap)
            if previous is None:
                previous = pooled[previous_tap] = self.backbone.pool_tap(out.taps[previous_tap])
            target = pooled.get(tap)
            if target is None:
                target = pooled[tap] = self.backbone.pool_tap(out.taps[tap])
            if detach:
                previous, target = previous.detach(), target.detach()
            result[tap] = head(previous, target)
        return result

    def ebar(self, surprisal: dict[str, Surprisal]) -> Tensor:
        """Dimension-normalized surprisal e_bar [B, |S|], taps in ``self.taps`` order."""
        return torch.stack([surprisal[t].e / self.heads[t].d for t in self.taps], dim=-1)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One pass: (logits [B, C], e_bar [B, |S|], S [B], m [B])."""
        out = self.backbone(x)
        ebar = self.ebar(self.surprisal(out))
        snap = (ebar * self.tap_weights).sum(-1)
        return out.logits, ebar, snap, confidence_blend(out.logits, self.options["alpha"])

    def map_score(self, snap: Tensor, m: Tensor) -> Tensor:
        """The score from S(x) and m(x) with the fitted map, in float64: S (no map), U's logit
        (logistic: same ranking as U, never saturated) or U (isotonic)."""
        mapping = self.options["mapping"]
        if mapping == "none":
            return snap.double()
        if mapping == "logistic":
            b0, b1, b2 = self.map_coef.double()
            return b0 + b1 * snap.double() + b2 * m.double()
        gamma = float(self.gamma_used)  # psi exactly as the map was fitted on it
        psi = gamma * snap + (1 - gamma) * m
        if self.iso_x.numel() == 0:  # not fitted yet (the dev log while training)
            return psi.double()
        return isotonic_predict(self.iso_x, self.iso_y, psi.to(self.iso_x.dtype)).double()

    def forward(self, x: Tensor) -> UQOutput:
        logits, ebar, snap, m = self.features(x)
        score = self.map_score(snap, m)
        u = torch.sigmoid(score) if self.options["mapping"] == "logistic" else score
        extras = {"S": snap, "m": m, "ebar": ebar, "U": u}
        return UQOutput(logits, score, extras=extras)

    def variant_names(self) -> list[str]:
        """``surprisal`` (S alone, the label-free score), ``confidence`` (the blend m alone)
        and, with several taps, ``tap_<name>`` (one tap's e_bar alone)."""
        taps = [f"tap_{t}" for t in self.taps] if len(self.taps) > 1 else []
        return ["surprisal", "confidence", *taps]

    def _variant_inputs(self, snap: Tensor, m: Tensor, ebar: Tensor) -> list[Tensor]:
        return [snap, m, *(ebar[:, i] for i in range(ebar.shape[1]))][: len(self.variant_names())]

    def variant_scores(self, out: UQOutput) -> dict[str, Tensor]:
        """Each part's logit under its own map fitted on the same dev mix as the score's: the
        surprisal alone, the confidence blend alone (the control for a map that has seen
        shifted data), and each tap (none with ``mapping=none``: nothing is fitted)."""
        if self.options["mapping"] == "none":
            return {}
        e = out.extras
        inputs = self._variant_inputs(e["S"], e["m"], e["ebar"])
        coef = self.variant_coef.double()
        return {
            name: coef[i, 0] + coef[i, 1] * x.double()
            for i, (name, x) in enumerate(zip(self.variant_names(), inputs, strict=True))
        }

    # ----------------------------------------------------------------- training
    def lambda_ss(self) -> float:
        """The auxiliary weight for this step: adaptive, or the linear warm-up of lambda_SS."""
        if self.options["adaptive_lambda"]:
            return float(self.lambda_now)
        ramp = self.options["ramp_epochs"]
        if ramp <= 0 or self._trainer is None:
            return self.options["lambda_ss"]
        steps = max(int(self.trainer.num_training_batches) * ramp, 1)
        return self.options["lambda_ss"] * min(1.0, (self.global_step + 1) / steps)

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """L_clf, L_SS, R and the per-tap NLL [B, |S|] for one batch (eq. 26-28)."""
        out = self.backbone(x)
        surprisal = self.surprisal(out)
        # omega_l / d_l with omega = |S| w (sums to |S|); no gradient flows through it.
        scale = self.tap_weights * len(self.taps) / self.tap_dims
        per_tap = torch.stack([surprisal[t].nll for t in self.taps], dim=-1)  # [B, |S|]
        l_ss = (per_tap.mean(0) * scale).sum()
        r_var = sum(s.logvar.abs().sum() for s in surprisal.values()) / len(x)
        reg = self.options["alpha_var"] * r_var
        if self._explicit_head_decay():
            reg = reg + self.options["alpha_wd"] * sum(
                (p**2).sum() for p in self.heads.parameters()
            )
        if self.posthoc_mode:
            l_clf = torch.zeros((), device=x.device)
        else:
            l_clf = self.classification_loss(out.logits, y)
        return {"clf": l_clf, "ss": l_ss, "reg": reg, "per_tap": per_tap}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        parts = self.losses(x, y)
        lam = self.lambda_ss()
        loss = parts["clf"] + lam * parts["ss"] + self.options["lambda_reg"] * parts["reg"]
        if not torch.isfinite(loss):  # one check per step; find the culprit only on failure
            self._raise_non_finite(parts["per_tap"])
            self.check_finite(loss, "loss")
        if self.options["adaptive_lambda"] and not self.posthoc_mode:
            self._adapt_lambda(parts, lam)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        # Each self.log costs about a head's forward pass: L_SS is summed here and logged once
        # per epoch (on_train_epoch_end).
        self._l_ss_sum = self._l_ss_sum + parts["ss"].detach()
        self._l_ss_steps += 1
        return loss

    def on_train_epoch_end(self) -> None:
        if self._l_ss_steps:
            self.log("train/l_ss", self._l_ss_sum / self._l_ss_steps)
        self._l_ss_sum, self._l_ss_steps = torch.zeros(()), 0

    def _raise_non_finite(self, per_tap: Tensor) -> None:
        """Stop with the first tap whose surprisal is NaN or infinite named (if any is)."""
        bad = (~torch.isfinite(per_tap)).any(dim=0)
        for tap, is_bad in zip(self.taps, bad.tolist(), strict=True):
            if is_bad:
                raise TrainingError(
                    f"non-finite surprisal at tap {tap!r}, epoch {self.current_epoch}, step "
                    f"{self.global_step}. Lower method.lr or method.lambda_ss, or set "
                    f"method.detach=true; no result was written."
                )

    def _adapt_lambda(self, parts: dict[str, Tensor], lam: float) -> None:
        """G.4: lambda <- clip(lambda * rho* / rho_hat), rho_hat an EMA of the gradient-norm
        ratio lambda ||grad L_SS|| / ||grad L_clf|| over all trainable parameters."""
        params = [p for p in self.parameters() if p.requires_grad]
        norms = []
        for part in (parts["ss"], parts["clf"]):
            grads = torch.autograd.grad(part, params, retain_graph=True, allow_unused=True)
            norms.append(torch.sqrt(sum((g**2).sum() for g in grads if g is not None)))
        ratio = (lam * norms[0] / norms[1].clamp_min(1e-12)).detach()
        ema = (
            ratio
            if torch.isnan(self.ratio_ema)
            else (ADAPTIVE_EMA * self.ratio_ema + (1 - ADAPTIVE_EMA) * ratio)
        )
        self.ratio_ema.copy_(ema)
        new = float(self.lambda_now) * ADAPTIVE_TARGET / max(float(ema), 1e-12)
        self.lambda_now.fill_(min(max(new, ADAPTIVE_BOUNDS[0]), ADAPTIVE_BOUNDS[1]))

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        clip = gradient_clip_val or self.options["grad_clip"]
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def _explicit_head_decay(self) -> bool:
        """AdamW decouples weight decay, so only there is alpha_wd ||theta||^2 added to the loss."""
        return self.training_config["optimizer"] == "adamw"

    def param_groups(self) -> list[dict[str, Any]]:
        """The heads' group decays by exactly the gradient of lambda_reg alpha_wd ||theta||^2
        (2 lambda_reg alpha_wd theta): Adam's and SGD's weight decay add ``wd * theta`` to the
        gradient, which is cheaper per step than the penalty term it replaces."""
        heads = {id(p) for p in self.heads.parameters()}
        trainable = [p for p in self.parameters() if p.requires_grad]
        head_decay = 2 * self.options["lambda_reg"] * self.options["alpha_wd"]
        if self._explicit_head_decay():
            head_decay = 0.0
        return [
            {
                "params": [p for p in trainable if id(p) not in heads],
                "weight_decay": self.training_config["weight_decay"],
            },
            {"params": [p for p in trainable if id(p) in heads], "weight_decay": head_decay},
        ]

    def on_train_epoch_start(self) -> None:
        fraction = self.options["qat_fraction"]
        epochs = int(self.trainer.max_epochs or 0)
        start = epochs - math.ceil(fraction * epochs) if fraction > 0 and epochs > 0 else None
        if start is not None and self.current_epoch >= start:
            for head in self.heads.values():
                head.fake_quant.fill_(True)

    # ----------------------------------------------------------------- diagnostics (G.8)
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        logits, ebar, snap, m = self.features(batch[0])  # one pass for every dev log
        self.log_dev(UQOutput(logits, self.map_score(snap, m)), batch[1])
        self._dev_stats.setdefault("ebar", []).append(ebar.detach())
        self._dev_stats.setdefault("conf", []).append(logits.softmax(-1).amax(-1).detach())

    def on_validation_epoch_end(self) -> None:
        if not self._dev_stats:
            return
        ebar = torch.cat(self._dev_stats.pop("ebar"))
        conf = torch.cat(self._dev_stats.pop("conf"))
        self.diagnostics = self._diagnose(ebar, conf)
        for tap, stats in self.diagnostics.items():
            self.log_dict({f"provisional/dev/{key}/{tap}": v for key, v in stats.items()})
        self._set_tap_weights(ebar)

    def _diagnose(self, ebar: Tensor, conf: Tensor) -> dict[str, dict[str, float]]:
        """Per tap on clean dev: mean and variance of e_bar (expected ~1 and 2/d_l under the
        model, H.5) and corr(e_bar, 1 - confidence) (positive but < 1)."""
        out = {}
        for i, tap in enumerate(self.taps):
            column = ebar[:, i].double()
            corr = torch.corrcoef(torch.stack([column, 1 - conf.double()]))[0, 1]
            out[tap] = {
                "ebar_mean": float(column.mean()),
                "ebar_var": float(column.var()),
                "ebar_var_expected": 2.0 / self.heads[tap].d,
                "corr_with_1_minus_conf": float(corr),
            }
        return out

    def _set_tap_weights(self, ebar: Tensor) -> None:
        if self.options["tap_weighting"] == "inverse_variance" and len(ebar) > 1:
            inverse = 1.0 / ebar.double().var(dim=0).clamp_min(1e-12)
            self.tap_weights.copy_((inverse / inverse.sum()).to(self.tap_weights.dtype))

    # ----------------------------------------------------------------- calibration
    @torch.no_grad()
    def _collect(self, batches: Any) -> dict[str, Tensor]:
        """Over batches, in eval mode: e_bar [N, |S|], S, m, confidence and errors [N]."""
        self.eval()
        parts: dict[str, list[Tensor]] = {}
        for x, y in batches:
            logits, ebar, snap, m = self.features(x)
            batch = {
                "ebar": ebar,
                "S": snap,
                "m": m,
                "conf": logits.softmax(-1).amax(-1),
                "errors": logits.argmax(-1) != y,
            }
            for key, value in batch.items():
                parts.setdefault(key, []).append(value)
        return {key: torch.cat(values) for key, values in parts.items()}

    def calibrate(self, data) -> None:
        """Diagnostics and tap weights on clean dev; the logistic map on the dev mix (ID + CID);
        for the isotonic map, the dev mix is kept for the tuning loop (gamma) and ``apply``."""
        clean = self._collect(data.loader("dev"))
        self._set_tap_weights(clean["ebar"])
        self.diagnostics = self._diagnose(clean["ebar"], clean["conf"])
        mapping = self.options["mapping"]
        if mapping == "none":
            return
        mix = self._collect(data.loader("dev_mix"))
        errors = mix["errors"]
        if errors.all() or not errors.any():
            raise CalibrationError(
                f"method.mapping={mapping} is fitted to predict errors on the dev mix, but all "
                f"{len(errors)} of its predictions were {'wrong' if errors.all() else 'right'}: "
                f"there is a single class. Use method.mapping=none (U = S), or a dev mix with "
                f"both right and wrong predictions."
            )
        self._mix = (mix["S"], mix["m"], errors.double())
        for i, x in enumerate(self._variant_inputs(mix["S"], mix["m"], mix["ebar"])):
            b0, b = fit_logistic(x[:, None], errors.double())
            self.variant_coef[i] = torch.tensor([b0, float(b[0])])
        if mapping == "logistic":
            label_free = self.options["label_free"]
            snap, m = mix["S"], mix["m"]
            features = snap[:, None] if label_free else torch.stack([snap, m], dim=-1)
            b0, b = fit_logistic(features, errors.double())
            coef = [b0, float(b[0]), 0.0 if label_free else float(b[1])]
            self.map_coef.copy_(torch.tensor(coef))

    def search_space(self) -> dict[str, tuple[Any, ...]]:
        if self.options["mapping"] != "isotonic":
            return {}
        if self.options["label_free"]:
            return {"gamma": (1.0,)}
        return {"gamma": grid(self.options["gamma"], GAMMA_GRID)}

    def tuning_scorer(self, data):
        snap, m, errors = self._mix
        return lambda c: auroc_objective(c["gamma"] * snap + (1 - c["gamma"]) * m, errors)

    def apply(self, choice: dict[str, Any]) -> None:
        """Fit the isotonic map on the dev mix's psi at the chosen gamma."""
        gamma = choice["gamma"]
        snap, m, errors = self._mix
        self.gamma_used.fill_(gamma)
        thresholds, values = fit_isotonic(gamma * snap + (1 - gamma) * m, errors)
        self.iso_x = thresholds
        self.iso_y = values.clamp(ISOTONIC_CLIP, 1 - ISOTONIC_CLIP)

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
        # The isotonic step function has as many steps as the fit found: resize before loading.
        for name in ("iso_x", "iso_y"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def tuned(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tap_weights": dict(zip(self.taps, self.tap_weights.tolist(), strict=True)),
            "effective_ranks": {t: min(h.rank, self.in_channels[t]) for t, h in self.heads.items()},
            "mapping": self.options["mapping"],
            "diagnostics": self.diagnostics,
        }
        if self.options["mapping"] == "logistic":
            out["map_coef"] = self.map_coef.tolist()
        if self.options["mapping"] == "isotonic":
            out["gamma"] = float(self.gamma_used)
            out["isotonic_steps"] = len(self.iso_x)
        if self.options["adaptive_lambda"]:
            out["lambda_ss_final"] = float(self.lambda_now)
        return out

    # ----------------------------------------------------------------- cost
    def cost_facts(self) -> CostFacts:
        """Extra parameters and MACs per tap (our heads, and the paper's eq. 12 and 57)."""
        shapes = self.backbone.tap_shapes()
        backbone_macs = count_macs(self.backbone, torch.zeros(1, *self.backbone.input_shape))
        per_tap = {}
        for tap, head in self.heads.items():
            previous = shapes[_predecessor(self.backbone, tap)]
            hw = math.prod(previous[1:]) if len(previous) > 1 else 1
            macs = head.macs(self.in_channels[tap])
            per_tap[tap] = {
                "params": sum(p.numel() for p in head.parameters()),
                "macs": macs,
                "fraction_of_backbone_macs": macs / backbone_macs,
                "pool_additions": math.prod(previous) + math.prod(shapes[tap]),
                "paper_eq12_params": 2 * head.d * head.rank + 2 * head.d,
                "paper_eq57_macs": hw * head.rank + 2 * head.rank * head.d,
            }
        extra_params = sum(t["params"] for t in per_tap.values())
        extra_params += 3 if self.options["mapping"] == "logistic" else 2 * len(self.iso_x)
        extra_macs = sum(t["macs"] for t in per_tap.values())
        return CostFacts(
            forward_passes=1,
            extra_params=extra_params,
            extra_macs=extra_macs,
            exports=("projectors and heads (int8)", "exp(-logvar/2) LUT (256)", "map"),
            details={
                "per_tap": per_tap,
                "backbone_macs": backbone_macs,
                "fraction_of_backbone_macs": extra_macs / backbone_macs,
            },
        )

    def device_export(self):
        """Gaussian heads with the logistic map run on the device: int8 weights with per-row
        scales by the deploy stage's rule (``uqbench.deploy.int8``, the one QAT trains through:
        where QAT ran, the firmware's weights are the ones training saw), the projector's dot
        product in int32, the rest in float32 on the FPU."""
        if self.options["variant"] != "gaussian" or self.options["mapping"] != "logistic":
            return None
        from uqbench.deploy.int8 import quantize_weights
        from uqbench.deploy.scores.snapuq import SNAPUQ as DeviceSNAPUQ
        from uqbench.methods.snap_heads import (
            EPS,
            LOGVAR_MAX,
            LOGVAR_MIN,
            LUT_LEVELS,
        )

        taps, constants = (
            [],
            {"tap_weights": self.tap_weights.float().numpy(), "map": self.map_coef.float().numpy()},
        )
        for h, tap in enumerate(self.taps):
            head = self.heads[tap]
            taps += [_predecessor(self.backbone, tap), tap]
            for name, layer in (("project", head.project), ("heads", head.heads)):
                # Where QAT ran, training saw exactly these int8 weights (the same rule).
                q, params = quantize_weights(layer.weight.detach().double().numpy(), 0)  # per row
                constants[f"{name}_q_{h}"] = q
                constants[f"{name}_scale_{h}"] = params.scale  # the input scale joins at deploy
                constants[f"{name}_b_{h}"] = layer.bias.detach().float().numpy()
        step = (LOGVAR_MAX - LOGVAR_MIN) / (LUT_LEVELS - 1)
        levels = LOGVAR_MIN + step * np.arange(LUT_LEVELS)
        constants["lut"] = np.exp(-levels).astype(np.float32)  # exp(-log sigma^2) per level
        return DeviceSNAPUQ(
            tuple(taps),
            constants,
            heads=len(self.taps),
            alpha=float(self.options["alpha"]),
            eps2=EPS**2,
            logvar_min=LOGVAR_MIN,
            logvar_max=LOGVAR_MAX,
            step=step,
        )

    def device_export_reason(self) -> str:
        return (
            f"only the gaussian heads with the logistic map are exported yet (this run: variant "
            f"{self.options['variant']}, mapping {self.options['mapping']})"
        )


def _predecessor(backbone: Backbone, tap: str) -> str:
    if tap not in backbone.tap_names:
        raise ConfigError(
            f"tap {tap!r} does not exist on {type(backbone).__name__}; its taps are "
            f"{', '.join(backbone.tap_names)} (set method.taps=[...])"
        )
    if backbone.tap_names.index(tap) == 0:
        raise ConfigError(
            f"tap {tap!r} is the first tap of {type(backbone).__name__} and has no predecessor "
            f"to predict it from; choose among {', '.join(backbone.tap_names[1:])}"
        )
    return backbone.predecessor(tap)


def _check_options(
    nu: float,
    delta: float,
    lowrank_k: int,
    mixture_k: int,
    alpha: float,
    gamma: float | None,
    qat_fraction: float,
    lambda_ss: float,
) -> None:
    checks = [
        (nu > 0, f"method.nu must be > 0 (Student-t degrees of freedom), got {nu}"),
        (delta > 0, f"method.delta must be > 0 (Huber threshold), got {delta}"),
        (lowrank_k >= 1, f"method.lowrank_k must be >= 1, got {lowrank_k}"),
        (mixture_k >= 1, f"method.mixture_k must be >= 1, got {mixture_k}"),
        (0 <= alpha <= 1, f"method.alpha must be in [0, 1], got {alpha}"),
        (gamma is None or 0 <= gamma <= 1, f"method.gamma must be in [0, 1], got {gamma}"),
        (0 <= qat_fraction <= 1, f"method.qat_fraction must be in [0, 1], got {qat_fraction}"),
        (lambda_ss >= 0, f"method.lambda_ss must be >= 0, got {lambda_ss}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
