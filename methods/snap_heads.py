"""SNAP-UQ's per-tap heads: project the previous activation, predict the next one, score it.

For a tap ``l`` with predecessor ``l-1`` (paper, sections 2.1-2.3):

    z_l = P_l pool(a_{l-1})                       rank r, eq. (1)
    (mu_l, xi_l) = g_l(z_l)                       two linear heads, eq. (2)
    sigma_l^2 = softplus(xi_l) + eps^2,  eps = 1e-4; log sigma_l^2 clamped to [log 1e-4, log 1e2]

``pool`` is global average pooling over space. ``P_l`` is a linear map on the pooled channels:
a 1x1 convolution followed by global average pooling is the same linear map (both are linear,
so they commute), and pooling first costs C*r instead of H*W*C*r multiply-accumulates.
The target is ``pool(a_l)``, the pooled channels of the tap (d_l of them).

Each variant returns, per example, the negative log-likelihood ``nll`` (the training term, its
additive constants dropped) and the surprisal ``e`` used in the score, with
``nll = (e + log det Sigma) / 2``:

- ``gaussian``: ``e = sum_i u_i^2``, ``u = (a - mu) / sigma`` (eq. 8).
- ``student_t``: ``e = sum_i (nu + 1) log(1 + u_i^2 / nu)`` (eq. 6).
- ``huber``: ``e = 2 sum_i rho_delta(u_i)`` (eq. 7).
- ``lowrank``: ``Sigma = diag(sigma^2) + B B^T`` with a learned ``B`` [d, k]; ``e`` is the
  quadratic form by Woodbury and ``log det`` by the matrix determinant lemma (Appendix I).
- ``mixture``: K diagonal Gaussians with weights from ``z``; there is no single standardized
  error, so ``e = 2 nll`` (twice the mixture NLL without its 2*pi constant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from uqbench.deploy.int8 import fake_quantize_weights

Variant = Literal["gaussian", "student_t", "huber", "lowrank", "mixture"]
EPS = 1e-4
LOGVAR_MIN, LOGVAR_MAX = math.log(1e-4), math.log(1e2)
LUT_LEVELS = 256  # the firmware looks exp(-log sigma^2 / 2) up in a 256-entry table


def fake_quant_logvar(logvar: Tensor) -> Tensor:
    """Round log sigma^2 to 256 levels over its clamp range (one shared scale); straight-through."""
    step = (LOGVAR_MAX - LOGVAR_MIN) / (LUT_LEVELS - 1)
    quantized = torch.round((logvar - LOGVAR_MIN) / step) * step + LOGVAR_MIN
    return logvar + (quantized - logvar).detach()


def huber(u: Tensor, delta: float) -> Tensor:
    """Huber's rho_delta: u^2/2 inside [-delta, delta], delta |u| - delta^2/2 outside."""
    absolute = u.abs()
    return torch.where(absolute <= delta, 0.5 * u**2, delta * absolute - 0.5 * delta**2)


def lowrank_terms(v: Tensor, logvar: Tensor, factor: Tensor) -> tuple[Tensor, Tensor]:
    """Quadratic form ``v^T Sigma^-1 v`` and ``log det Sigma`` for Sigma = diag(e^logvar) + B B^T.

    ``v``, ``logvar``: [N, d]; ``factor`` B: [d, k]. Woodbury and the determinant lemma with the
    Cholesky factor L of ``I + B^T D^-1 B``: cost O(d k^2 + k^3) per example (Appendix I).
    """
    inv_d = torch.exp(-logvar)
    quad_diag = (v**2 * inv_d).sum(-1)
    small = torch.einsum("dk,nd,dj->nkj", factor, inv_d, factor)
    eye = torch.eye(factor.shape[1], dtype=v.dtype, device=v.device)
    chol = torch.linalg.cholesky(eye + small)
    projected = torch.einsum("dk,nd->nk", factor, v * inv_d)
    solved = torch.linalg.solve_triangular(chol, projected[..., None], upper=False)[..., 0]
    quad = quad_diag - (solved**2).sum(-1)
    logdet = logvar.sum(-1) + 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return quad, logdet


@dataclass
class Surprisal:
    """Per-example outputs of one head: ``nll`` [B], ``e`` [B], ``logvar`` [B, K*d] (for the
    scale regularizer)."""

    nll: Tensor
    e: Tensor
    logvar: Tensor


class SurprisalHead(nn.Module):
    """Projector P_l and predictor g_l for one tap; see the module docstring."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rank: int,
        variant: Variant = "gaussian",
        nu: float = 5.0,
        delta: float = 1.0,
        lowrank_k: int = 4,
        mixture_k: int = 2,
    ) -> None:
        super().__init__()
        self.variant, self.nu, self.delta = variant, nu, delta
        self.d, self.rank = out_channels, rank
        self.components = mixture_k if variant == "mixture" else 1
        self.project = nn.Linear(in_channels, rank)
        # The two linear heads (mu and xi) as one matrix: one matmul instead of two per step.
        self.heads = nn.Linear(rank, 2 * out_channels * self.components)
        if variant == "lowrank":
            self.factor = nn.Parameter(0.01 * torch.randn(out_channels, lowrank_k))
        if variant == "mixture":
            self.mix = nn.Linear(rank, mixture_k)
        # Persisted so a reloaded checkpoint scores with the same (int8-rounded) weights.
        self.register_buffer("fake_quant", torch.tensor(False))

    def _linear(self, layer: nn.Linear, x: Tensor) -> Tensor:
        # QAT: the deploy stage's own int8 weight rule (per output row), straight-through.
        weight = fake_quantize_weights(layer.weight) if self.fake_quant else layer.weight
        return F.linear(x, weight, layer.bias)

    def predict(self, previous: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pooled a_{l-1} [B, C_in] -> (z [B, r], mu, log sigma^2), the latter two [B, d], or
        [B, K, d] for the mixture."""
        z = self._linear(self.project, previous)
        mu, xi = self._linear(self.heads, z).chunk(2, dim=-1)
        logvar = torch.log(F.softplus(xi) + EPS**2).clamp(LOGVAR_MIN, LOGVAR_MAX)
        if self.fake_quant:
            logvar = fake_quant_logvar(logvar)
        if self.variant == "mixture":
            shape = (len(z), self.components, self.d)
            mu, logvar = mu.view(shape), logvar.view(shape)
        return z, mu, logvar

    def forward(self, previous: Tensor, target: Tensor) -> Surprisal:
        """``previous``: pooled a_{l-1} [B, C_in]; ``target``: pooled a_l [B, d]."""
        z, mu, logvar = self.predict(previous)
        if self.variant == "mixture":
            v = target[:, None, :] - mu  # [B, K, d]
            per_component = 0.5 * ((v * v * torch.exp(-logvar)).sum(-1) + logvar.sum(-1))
            log_weights = F.log_softmax(self._linear(self.mix, z), dim=-1)
            nll = -torch.logsumexp(log_weights - per_component, dim=-1)
            return Surprisal(nll, 2 * nll, logvar.flatten(1))
        v = target - mu
        u2 = v * v * torch.exp(-logvar)  # squared standardized error
        logdet = logvar.sum(-1)
        if self.variant == "gaussian":
            e = u2.sum(-1)
        elif self.variant == "student_t":
            e = ((self.nu + 1) * torch.log1p(u2 / self.nu)).sum(-1)
        elif self.variant == "huber":
            e = 2 * huber(v * torch.exp(-0.5 * logvar), self.delta).sum(-1)
        else:  # lowrank
            e, logdet = lowrank_terms(v, logvar, self.factor)
        return Surprisal(0.5 * (e + logdet), e, logvar)

    def macs(self, in_channels: int) -> int:
        """Multiply-accumulates per example (pooling additions not included)."""
        macs = in_channels * self.rank + 2 * self.rank * self.d * self.components
        if self.variant == "mixture":
            macs += self.rank * self.components
        if self.variant == "lowrank":
            k = self.factor.shape[1]
            macs += self.d * k + self.d * k * k + k**3 // 3
        return macs
