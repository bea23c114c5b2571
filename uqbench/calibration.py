"""Monotone maps from uncertainty features to an error probability, fitted on dev data.

- :func:`fit_logistic`: class-balanced logistic regression with an L2 penalty on the slopes
  (scikit-learn's objective: ``C * sum_i w_i log-loss_i + ||coef||^2 / 2``, intercept free),
  solved by damped Newton steps in float64. Used by SNAP-UQ's ``U = sigmoid(b0 + b1 S + b2 m)``.
- :func:`fit_isotonic` / :func:`isotonic_predict`: pool-adjacent-violators (PAV), a
  non-decreasing, right-continuous step function (paper, Appendix J).
- :func:`fit_temperature`: the temperature minimizing NLL (temperature scaling, and the metric
  table's temperature-scaled calibration).

Both are small enough to ship to a microcontroller as a few numbers or a short table.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def _as64(x: Tensor) -> Tensor:
    return torch.as_tensor(x).detach().to(torch.float64)


def balanced_weights(targets: Tensor) -> Tensor:
    """``n / (2 n_c)`` per example, so both classes weigh the same (scikit-learn's "balanced")."""
    y = _as64(targets)
    n, n_pos = len(y), y.sum()
    if n_pos == 0 or n_pos == n:
        raise ValueError("balanced weights need both classes among the targets")
    return torch.where(y > 0, n / (2 * n_pos), n / (2 * (n - n_pos)))


def fit_logistic(
    features: Tensor,
    targets: Tensor,
    class_balanced: bool = True,
    C: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[float, Tensor]:
    """Fit ``P(y=1 | x) = sigmoid(b0 + x @ b)``; return ``(b0, b)``.

    ``features``: [N, F]; ``targets``: [N] in {0, 1} with both classes present.
    """
    x, y = _as64(features), _as64(targets)
    if x.dim() == 1:
        x = x[:, None]
    if not ((y == 0) | (y == 1)).all() or y.min() == y.max():
        raise ValueError("fit_logistic needs 0/1 targets with both classes present")
    w = balanced_weights(y) if class_balanced else torch.ones_like(y)
    design = torch.cat([torch.ones(len(y), 1, dtype=torch.float64), x], dim=1)
    penalty = torch.full((design.shape[1],), 1.0 / C, dtype=torch.float64)
    penalty[0] = 0.0  # the intercept is not penalized

    def objective(beta: Tensor) -> Tensor:
        z = design @ beta
        log_loss = torch.nn.functional.softplus(z) - y * z  # -log sigmoid for y, stable
        return (w * log_loss).sum() + 0.5 * (penalty * beta**2).sum()

    beta = torch.zeros(design.shape[1], dtype=torch.float64)
    for _ in range(max_iter):
        p = torch.sigmoid(design @ beta)
        grad = design.T @ (w * (p - y)) + penalty * beta
        if grad.abs().max() < tol:
            break
        hessian = design.T @ (design * (w * p * (1 - p))[:, None]) + torch.diag(penalty)
        step = torch.linalg.solve(hessian + 1e-12 * torch.eye(len(beta), dtype=torch.float64), grad)
        size, current = 1.0, objective(beta)
        while objective(beta - size * step) > current and size > 1e-8:
            size /= 2  # backtracking keeps Newton monotone on nearly separable data
        beta = beta - size * step
    return float(beta[0]), beta[1:].clone()


def fit_isotonic(x: Tensor, y: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Least-squares non-decreasing fit of ``y`` on ``x`` by PAV (paper, eq. 55).

    Returns ``(thresholds, values)``: the step function is ``values[k]`` on
    ``[thresholds[k], thresholds[k+1])``, right-continuous. Tied ``x`` share one value.
    """
    x, y = _as64(x).flatten(), _as64(y).flatten()
    if x.numel() == 0 or x.numel() != y.numel():
        raise ValueError("fit_isotonic needs as many x as y, at least one")
    w = torch.ones_like(y) if weights is None else _as64(weights).flatten()
    order = torch.argsort(x, stable=True)
    x, y, w = x[order], y[order], w[order]
    unique_x, inverse = torch.unique_consecutive(x, return_inverse=True)
    weight = torch.zeros(len(unique_x), dtype=torch.float64).index_add_(0, inverse, w)
    total = torch.zeros(len(unique_x), dtype=torch.float64).index_add_(0, inverse, w * y)
    # Pool adjacent violators: a stack of blocks (start index, weight, weighted sum).
    starts: list[int] = []
    weights_: list[float] = []
    sums: list[float] = []
    for i, (wi, si) in enumerate(zip(weight.tolist(), total.tolist(), strict=True)):
        starts.append(i)
        weights_.append(wi)
        sums.append(si)
        while len(sums) > 1 and sums[-2] / weights_[-2] >= sums[-1] / weights_[-1]:
            last_sum, last_weight = sums.pop(), weights_.pop()
            sums[-1] += last_sum
            weights_[-1] += last_weight
            starts.pop()
    values = torch.tensor(
        [s / w_ for s, w_ in zip(sums, weights_, strict=True)], dtype=torch.float64
    )
    return unique_x[torch.tensor(starts)], values


def isotonic_predict(thresholds: Tensor, values: Tensor, x: Tensor) -> Tensor:
    """Evaluate the step function of :func:`fit_isotonic` (below the first threshold: the first
    value)."""
    index = torch.searchsorted(thresholds.to(x.dtype), x.contiguous(), right=True) - 1
    return values.to(x.dtype)[index.clamp(min=0)]


GRID = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)


def fit_temperature(
    logits: Tensor,
    labels: Tensor,
    method: Literal["lbfgs", "grid"] = "lbfgs",
    grid: tuple[float, ...] = GRID,
) -> float:
    """The T minimizing ``NLL(softmax(logits / T), labels)``.

    With no misclassified example the NLL falls as T -> 0 and has no finite minimum (L-BFGS
    stopped at T ~ 0.01 on digits' error-free dev split, and every test error then cost a
    huge NLL): the data say nothing about how confident to be when wrong, so T stays 1.
    """
    logits, labels = logits.detach().double(), labels.long()
    if method == "lbfgs" and bool((logits.argmax(-1) == labels).all()):
        return 1.0
    if method == "grid":
        return min(grid, key=lambda t: float(F.cross_entropy(logits / t, labels)))
    log_t = torch.zeros((), dtype=torch.float64, device=logits.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())
