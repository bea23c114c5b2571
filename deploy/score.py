"""What a method runs on the device after the backbone: its export description.

A method describes its device form by returning one from ``UQMethod.device_export()``:

- :class:`LogitScore`: the score is a function of the logits only (MSP, entropy, energy, each
  with a temperature). On the device the int8 logits are dequantized and the score computed in
  float32 (the boards' cores have an FPU): softmax(z / T), then 1 - max p (``msp``),
  -sum p log p (``entropy``) or -T logsumexp(z / T) (``energy``).

- :class:`TapScore`: the score reads globally average-pooled taps (and the logits): the graph
  outputs those pooled taps (int8) after the logits, and the device dequantizes them and
  computes the score in float32 with the method's fitted constants in flash. ``mahalanobis``
  (the paper variant: per-tap class means and diagonal variances, tap-weighted, class minimum),
  ``snapuq`` (Gaussian heads with int8 weights, per-row scales: the projector's dot product
  exact in int32 on the int8 pooled tap, the heads accumulated in float32; exp(-log sigma^2)
  looked up in a 256-entry table at the nearest of 256 log-variance levels, as the paper's QAT
  rounds it; then the dimension-normalized surprisal, tap weights, confidence blend, logistic
  map), ``mahalanobis_mds`` (MDS: the pooled penultimate vector whitened by ``W`` with
  ``W^T W`` the shared precision, then the nearest whitened class mean: ``d^2 + C d`` MACs
  instead of ``C (d^2 + d)``), ``react`` (the pooled penultimate vector clipped, the
  classifier in float32, energy), ``ash`` (the top k of the pooled vector kept, ties to the
  lower index, shaped; the classifier; energy), ``ash_maps`` (the same on the whole int8
  penultimate map, which the graph outputs unpooled: the k largest codes found by a 256-bin
  count, no float copy of the map; then the shaped map pooled),
  ``mc_dropout_head`` (the classifier N times on the pooled vector under the run's N fixed
  dropout masks, compiled in), ``early_exit`` (exit heads on pooled taps, softmax averaged
  with the classifier's) and
  ``evidential`` (Dirichlet parameters from the logits: no taps) export this way.

- :class:`Ensemble`: several backbones run one after another in one arena (each its own int8
  graph), their softmax averaged and the entropy of the mean as the score (deep ensembles).

A method that returns ``None`` has no device form; ``device_export_reason()`` says why (ODIN
needs an input gradient; a plugin that does not describe its export says so). :func:`host_score`
is the float32 host reference of the device's computation, in the same order of operations;
firmware and host agree to float32 rounding (``expf``/``logf`` of newlib against NumPy's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class LogitScore:
    kind: Literal["msp", "entropy", "energy"]
    temperature: float = 1.0

    def to_dict(self) -> dict:
        return {"kind": "logit_score", "score": self.kind, "temperature": self.temperature}


@dataclass(frozen=True)
class TapScore:
    kind: Literal[
        "mahalanobis", "mahalanobis_mds", "snapuq", "react", "ash", "ash_maps",
        "mc_dropout_head", "early_exit", "evidential", "ensemble",
    ]  # fmt: skip
    taps: tuple[str, ...]  # pooled taps the graph outputs after the logits, in this order
    constants: dict[str, np.ndarray]  # float arrays compiled into flash
    params: dict[str, float]

    def to_dict(self) -> dict:
        return {"kind": "tap_score", "score": self.kind, "taps": list(self.taps),
                "params": self.params,
                "constants": {k: list(v.shape) for k, v in self.constants.items()}}  # fmt: skip


@dataclass(frozen=True)
class Ensemble:
    """Networks run one after another on the same input, their softmax averaged: a deep
    ensemble's members, or MC dropout's passes (each the backbone with one pass's fixed masks).
    The score: the entropy of the mean, or with ``mutual_information`` that entropy minus the
    members' mean entropy."""

    members: tuple  # the networks (torch modules with the backbone interface), in order
    mutual_information: bool = False
    what: str = "deep ensemble members"

    def score(self) -> TapScore:
        """The scoring part: the members' logits, concatenated, as a :class:`TapScore`."""
        params = {"members": len(self.members), "mutual_information": self.mutual_information}
        return TapScore("ensemble", (), {}, params)

    def to_dict(self) -> dict:
        score = "mutual information" if self.mutual_information else "entropy of the mean softmax"
        return {"kind": "ensemble", "what": self.what, "score": score,
                "members": len(self.members)}  # fmt: skip


def linear_head(backbone) -> dict[str, np.ndarray] | None:
    """The classifier's weight and bias when the backbone's head is its ``classifier`` linear
    layer (checked on a random vector), else None: what ReAct and ASH rerun on the device."""
    import torch

    linear = getattr(backbone, "classifier", None)
    if not isinstance(linear, torch.nn.Linear):
        return None
    probe = torch.randn(2, linear.in_features)
    with torch.no_grad():
        if not torch.allclose(backbone.forward_head(probe), linear(probe)):
            return None
    return {"classifier_w": linear.weight.detach().float().numpy(),
            "classifier_b": linear.bias.detach().float().numpy()}  # fmt: skip


def bind_input_scales(export: TapScore, quant: list[tuple[float, int]]) -> TapScore:
    """SNAP-UQ's projector reads the int8 pooled tap directly: fold that tap's scale into the
    projector's per-row weight scales (one float32 multiplier per row, on host and device)."""
    if export.kind != "snapuq":
        return export
    constants = dict(export.constants)
    for h in range(int(export.params["heads"])):
        scale_in = np.float64(quant[2 * h + 1][0])
        weight_scale = export.constants[f"project_scale_{h}"].astype(np.float64)
        constants[f"project_scale_{h}"] = (weight_scale * scale_in).astype(np.float32)
    return TapScore(export.kind, export.taps, constants, export.params)


def dequantize_outputs(
    outputs: np.ndarray, sizes: list[int], quant: list[tuple[float, int]]
) -> list[np.ndarray]:
    """Split concatenated int8 outputs [B, sum(sizes)] and dequantize each in float32."""
    parts, start = [], 0
    for size, (scale, zero) in zip(sizes, quant, strict=True):
        q = np.asarray(outputs[:, start : start + size], dtype=np.int32)
        parts.append((q - zero).astype(np.float32) * np.float32(scale))
        start += size
    return parts


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True), dtype=np.float32)
    return (e / e.sum(1, keepdims=True, dtype=np.float32)).astype(np.float32)


def _classifier_energy(
    features: np.ndarray, c: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The classifier in float32 on (reshaped) pooled features, then (softmax, energy)."""
    f32 = np.float32
    z = (features @ c["classifier_w"].T + c["classifier_b"]).astype(f32)
    top = z.max(1)
    total = np.exp(z - top[:, None], dtype=f32).sum(1, dtype=f32)
    return _softmax(z), (-(top + np.log(total, dtype=f32))).astype(f32)


def _ash_shape(h: np.ndarray, k: int, mode: str) -> np.ndarray:
    """ASH on each row of ``h`` [B, n] in float32, as the device does: the k largest kept (ties:
    the lower index first), then kept as they are (p), set to sum / k (b) or scaled by
    exp(sum / kept sum) (s)."""
    f32 = np.float32
    order = np.argsort(-h, axis=1, kind="stable")[:, :k]
    kept = np.zeros_like(h, dtype=bool)
    np.put_along_axis(kept, order, True, axis=1)
    shaped = np.where(kept, h, f32(0)).astype(f32)
    if mode == "b":
        return np.where(kept, (h.sum(1, dtype=f32) / f32(k))[:, None], f32(0)).astype(f32)
    if mode == "s":
        total, kept_sum = h.sum(1, dtype=f32), shaped.sum(1, dtype=f32)
        factor = np.exp(total / np.maximum(kept_sum, f32(1e-12)), dtype=f32)
        return (shaped * factor[:, None]).astype(f32)
    return shaped


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of each row of probabilities [B, C], in float32 as the device computes it."""
    f32 = np.float32
    return -(p * np.log(np.maximum(p, f32(1e-30)), dtype=f32)).sum(1, dtype=f32)


def _predictive(
    passes: list[np.ndarray], mutual_information: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, score) of several softmaxes [B, C]: the mean's entropy, or the mutual
    information (that entropy minus the passes' mean entropy)."""
    f32 = np.float32
    mean = (sum(passes) / f32(len(passes))).astype(f32)
    score = _entropy(mean)
    if mutual_information:
        score = score - sum(_entropy(p) for p in passes) / f32(len(passes))
    return mean, score.astype(f32)


def host_tap_score(
    outputs: np.ndarray, sizes: list[int], quant: list[tuple[float, int]], export: TapScore
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, score) in float32 from the graph's concatenated int8 outputs."""
    logits, *taps = dequantize_outputs(outputs, sizes, quant)
    probs = _softmax(logits)
    c = export.constants
    f32 = np.float32
    if export.kind == "mahalanobis":
        total = np.zeros((len(logits), c["means_0"].shape[0]), dtype=f32)
        for i, feature in enumerate(taps):
            diff = feature[:, None, :] - c[f"means_{i}"][None]
            distance = diff * diff / (c[f"variance_{i}"] + f32(export.params["shrinkage"]))
            total += c["tap_weights"][i] * distance.mean(-1, dtype=f32)
        return probs, total.min(1).astype(f32)
    if export.kind == "mahalanobis_mds":
        whitened = (taps[0] @ c["whiten"].T).astype(f32)
        diff = whitened[:, None, :] - c["whitened_means"][None]
        return probs, (diff * diff).sum(-1, dtype=f32).min(1).astype(f32)
    if export.kind == "react":
        clipped = np.minimum(taps[0], f32(export.params["threshold"]))
        return _classifier_energy(clipped, c)
    if export.kind in ("ash", "ash_maps"):
        shaped = _ash_shape(taps[0], int(export.params["k"]), export.params["mode"])
        if export.kind == "ash_maps":  # NHWC: pool over the H * W positions per channel
            channels = int(export.params["channels"])
            grid = shaped.reshape(len(shaped), -1, channels)
            shaped = (grid.sum(1, dtype=f32) / f32(grid.shape[1])).astype(f32)
        return _classifier_energy(shaped, c)
    if export.kind == "mc_dropout_head":
        h = taps[0]
        passes = [_softmax(((h * mask) @ c["classifier_w"].T + c["classifier_b"]).astype(f32))
                  for mask in c["masks"]]  # fmt: skip
        return _predictive(passes, export.params["mutual_information"])
    if export.kind == "early_exit":
        mean = sum(_softmax((t @ c[f"exit_w_{i}"].T + c[f"exit_b_{i}"]).astype(f32))
                   for i, t in enumerate(taps)) + probs  # fmt: skip
        mean = (mean / f32(len(taps) + 1)).astype(f32)
        if export.params["entropy"]:
            score = _entropy(mean)
        else:
            score = f32(1) - mean.max(1)
        return mean, score.astype(f32)
    if export.kind == "ensemble":
        members = [_softmax(part) for part in (logits, *taps)]
        return _predictive(members, export.params["mutual_information"])
    if export.kind == "evidential":
        soft = np.where(logits > 20, logits, np.log1p(np.exp(np.minimum(logits, 20), dtype=f32)))
        alpha = (f32(export.params["eta"]) * soft + f32(1)).astype(f32)
        total = alpha.sum(1, dtype=f32)
        expected = (alpha / total[:, None]).astype(f32)
        if export.params["vacuity"]:
            return expected, (f32(logits.shape[1]) / total).astype(f32)
        return expected, (f32(1) - expected.max(1)).astype(f32)
    raw = np.split(np.asarray(outputs, dtype=np.int64), np.cumsum(sizes)[:-1], axis=1)
    heads = int(export.params["heads"])
    ebars = []
    for h in range(heads):
        k_prev, k_target = 2 * h + 1, 2 * h + 2  # output positions (logits are 0)
        centred = raw[k_prev] - quant[k_prev][1]
        acc = centred @ c[f"project_q_{h}"].astype(np.int64).T  # exact, as on the device
        z = (acc.astype(f32) * c[f"project_scale_{h}"] + c[f"project_b_{h}"]).astype(f32)
        y = z @ c[f"heads_q_{h}"].astype(f32).T * c[f"heads_scale_{h}"] + c[f"heads_b_{h}"]
        target = taps[k_target - 1]
        d = target.shape[1]
        mu, xi = y[:, :d].astype(f32), y[:, d:].astype(f32)
        soft = np.where(xi > 20, xi, np.log1p(np.exp(np.minimum(xi, 20), dtype=f32)))
        logvar = np.clip(np.log(soft + f32(export.params["eps2"])), export.params["logvar_min"],
                         export.params["logvar_max"]).astype(f32)  # fmt: skip
        # exp(-log sigma^2) from the 256-entry table at the nearest level (paper C.5)
        level = np.floor((logvar - f32(export.params["logvar_min"])) / f32(export.params["step"])
                         + f32(0.5)).astype(np.int64).clip(0, len(c["lut"]) - 1)  # fmt: skip
        e = ((target - mu) ** 2 * c["lut"][level]).sum(1, dtype=f32)
        ebars.append(e / f32(d))
    snap = sum(c["tap_weights"][h] * ebars[h] for h in range(heads))
    top2 = -np.sort(-probs, 1)[:, :2]
    alpha = f32(export.params["alpha"])
    m = alpha * (1 - top2[:, 0]) + (1 - alpha) * (1 - (top2[:, 0] - top2[:, 1]))
    b0, b1, b2 = (f32(v) for v in c["map"])
    return probs, (b0 + b1 * snap + b2 * m).astype(f32)


def host_score(
    logits: np.ndarray, scale: float, zero_point: int, export: LogitScore
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [B, C], score [B]) in float32 from int8 logits [B, C], as the device
    computes them."""
    real = (np.asarray(logits, dtype=np.int32) - zero_point).astype(np.float32) * np.float32(scale)
    z = real / np.float32(export.temperature)
    top = z.max(1, keepdims=True)
    e = np.exp(z - top, dtype=np.float32)
    total = e.sum(1, keepdims=True, dtype=np.float32)
    probs = (e / total).astype(np.float32)
    if export.kind == "msp":
        score = np.float32(1) - probs.max(1)
    elif export.kind == "entropy":
        safe = np.maximum(probs, np.float32(1e-30))
        score = -(probs * np.log(safe, dtype=np.float32)).sum(1, dtype=np.float32)
    else:
        score = -np.float32(export.temperature) * (top[:, 0] + np.log(total[:, 0]))
    return probs, score.astype(np.float32)


def _floats(name: str, values: np.ndarray) -> str:
    """A constant array in C: int8 arrays stay int8 (a byte each in flash), others float32."""
    if np.asarray(values).dtype == np.int8:
        flat = np.asarray(values).ravel()
        body = ",".join(str(int(v)) for v in flat)
        return f"static const int8_t {name}[{len(flat)}] = {{{body}}};\n"
    flat = np.asarray(values, dtype=np.float32).ravel()
    body = ",".join(f"{v!r}f" for v in flat.tolist())
    return f"static const float {name}[{len(flat)}] = {{{body}}};\n"


def _classifier_energy_c(d: int, feature: str) -> str:
    """C: the float32 classifier on ``feature`` (an expression in ``j``, the input index, of
    ``d`` inputs), its softmax into ``probs`` and the energy returned (host:
    :func:`_classifier_energy`)."""
    return f"""  float z[UQ_CLASSES], top2 = -INFINITY, total2 = 0.0f;
  for (int c = 0; c < UQ_CLASSES; c++) {{
    float acc = uq_classifier_b[c];
    for (int j = 0; j < {d}; j++) acc += uq_classifier_w[c * {d} + j] * {feature};
    z[c] = acc;
    if (acc > top2) top2 = acc;
  }}
  for (int c = 0; c < UQ_CLASSES; c++) {{ probs[c] = expf(z[c] - top2); total2 += probs[c]; }}
  for (int c = 0; c < UQ_CLASSES; c++) probs[c] = probs[c] / total2;
  return -(top2 + logf(total2));"""


def tap_c_source(export: TapScore, sizes: list[int], quant: list[tuple[float, int]]) -> str:
    """``uq_score.c`` for a :class:`TapScore`: ``float uq_score(const int8_t *out, float *probs)``
    with ``out`` the graph's concatenated outputs (logits first)."""
    lines = ["/* Generated by uqbench: the uncertainty score from pooled taps (float32). */",
             "#include <math.h>", "#include <stdint.h>"]  # fmt: skip
    offsets = np.cumsum([0, *sizes]).tolist()
    lines.append(f"#define UQ_CLASSES {sizes[0]}")
    for k, ((scale, zero), size, start) in enumerate(zip(quant, sizes, offsets, strict=False)):
        lines.append(f"#define UQ_OUT{k}_SIZE {size}\n#define UQ_OUT{k}_AT {start}")
        lines.append(f"static const float uq_scale{k} = {float(np.float32(scale))!r}f;")
        lines.append(f"static const int32_t uq_zero{k} = {int(zero)};")
    body = "".join(_floats(f"uq_{name}", value) for name, value in export.constants.items())
    maps = {k + 1 for k, tap in enumerate(export.taps) if tap.endswith(":map")}
    deq = "\n".join(  # a whole map is read in place, code by code: no float copy on the stack
        f"  float t{k}[UQ_OUT{k}_SIZE];\n  for (int i = 0; i < UQ_OUT{k}_SIZE; i++) "
        f"t{k}[i] = (float)(out[UQ_OUT{k}_AT + i] - uq_zero{k}) * uq_scale{k};"
        for k in range(len(sizes))
        if k not in maps
    )
    softmax = """  float top = -INFINITY, total = 0.0f;
  for (int i = 0; i < UQ_CLASSES; i++) if (t0[i] > top) top = t0[i];
  for (int i = 0; i < UQ_CLASSES; i++) { probs[i] = expf(t0[i] - top); total += probs[i]; }
  for (int i = 0; i < UQ_CLASSES; i++) probs[i] = probs[i] / total;"""
    if export.kind == "mahalanobis":
        shrink = float(np.float32(export.params["shrinkage"]))
        terms = []
        for i in range(len(export.taps)):
            d = sizes[i + 1]
            terms.append(
                f"    {{ float acc = 0.0f;\n"
                f"      for (int j = 0; j < {d}; j++) {{ float diff = t{i + 1}[j] - "
                f"uq_means_{i}[c * {d} + j]; acc += diff * diff / (uq_variance_{i}[j] + "
                f"{shrink!r}f); }}\n"
                f"      total_c += uq_tap_weights[{i}] * (acc / {d}.0f); }}"
            )
        score = (
            "  float best = INFINITY;\n  for (int c = 0; c < UQ_CLASSES; c++) {\n"
            "    float total_c = 0.0f;\n" + "\n".join(terms) + "\n"
            "    if (total_c < best) best = total_c;\n  }\n  return best;"
        )
    elif export.kind == "mahalanobis_mds":
        d = sizes[1]
        score = f"""  float g[{d}], best = INFINITY;
  for (int i = 0; i < {d}; i++) {{  /* whitened features: W f */
    float acc = 0.0f;
    for (int j = 0; j < {d}; j++) acc += uq_whiten[i * {d} + j] * t1[j];
    g[i] = acc;
  }}
  for (int c = 0; c < UQ_CLASSES; c++) {{
    float acc = 0.0f;
    for (int i = 0; i < {d}; i++) {{ float diff = g[i] - uq_whitened_means[c * {d} + i];
      acc += diff * diff; }}
    if (acc < best) best = acc;
  }}
  return best;"""
    elif export.kind == "react":
        d = sizes[1]
        thr = float(np.float32(export.params["threshold"]))
        score = _classifier_energy_c(d, f"(t1[j] < {thr!r}f ? t1[j] : {thr!r}f)")
    elif export.kind == "ash":
        d, k, mode = sizes[1], int(export.params["k"]), export.params["mode"]
        value = {"p": "t1[j]", "b": "sum / (float)" + str(k), "s": "t1[j] * factor"}[mode]
        score = f"""  float sum = 0.0f, kept_sum = 0.0f, shaped[{d}];
  for (int j = 0; j < {d}; j++) sum += t1[j];
  for (int j = 0; j < {d}; j++) {{  /* kept when fewer than k rank above it (ties: lower index) */
    int above = 0;
    for (int i = 0; i < {d}; i++) above += t1[i] > t1[j] || (t1[i] == t1[j] && i < j);
    shaped[j] = above < {k} ? 1.0f : 0.0f;
    if (above < {k}) kept_sum += t1[j];
  }}
  float factor = expf(sum / (kept_sum > 1e-12f ? kept_sum : 1e-12f));
  (void)factor;
  for (int j = 0; j < {d}; j++) shaped[j] = shaped[j] > 0.0f ? {value} : 0.0f;
""" + _classifier_energy_c(d, "shaped[j]")
    elif export.kind == "ash_maps":
        n, k, mode = sizes[1], int(export.params["k"]), export.params["mode"]
        channels = int(export.params["channels"])
        value = {"p": "x", "b": "sum / (float)" + str(k), "s": "x * factor"}[mode]
        score = f"""  const int8_t *map = out + UQ_OUT1_AT; /* NHWC: {n // channels} x {channels} */
  int32_t count[256] = {{0}};
  float sum = 0.0f;
  for (int j = 0; j < {n}; j++) {{
    count[map[j] + 128]++;
    sum += (float)(map[j] - uq_zero1) * uq_scale1;
  }}
  /* the threshold code v: fewer than k codes above it, at least k at or above it; of the
   * codes equal to v the first `ties` (in index order) are kept */
  int v = 255, above = 0;
  while (above + count[v] < {k}) above += count[v--];
  int ties = {k} - above, seen = 0;
  float kept_sum = 0.0f;
  for (int j = 0; j < {n}; j++) {{
    int code = map[j] + 128;
    if (code > v || (code == v && seen++ < ties))
      kept_sum += (float)(map[j] - uq_zero1) * uq_scale1;
  }}
  float factor = expf(sum / (kept_sum > 1e-12f ? kept_sum : 1e-12f));
  (void)factor;
  float pooled[{channels}] = {{0}};
  seen = 0;
  for (int j = 0; j < {n}; j++) {{
    int code = map[j] + 128;
    if (code > v || (code == v && seen++ < ties)) {{
      float x = (float)(map[j] - uq_zero1) * uq_scale1;
      pooled[j % {channels}] += {value};
    }}
  }}
  for (int i = 0; i < {channels}; i++) pooled[i] = pooled[i] / {n // channels}.0f;
""" + _classifier_energy_c(channels, "pooled[j]")
    elif export.kind == "mc_dropout_head":
        d, n = sizes[1], export.constants["masks"].shape[0]
        mutual = 1 if export.params["mutual_information"] else 0
        score = f"""  float mean[UQ_CLASSES] = {{0}}, mean_entropy = 0.0f;
  for (int s = 0; s < {n}; s++) {{  /* one pass: the classifier on the masked pooled vector */
    float z[UQ_CLASSES], top2 = -INFINITY, total2 = 0.0f, h = 0.0f;
    for (int c = 0; c < UQ_CLASSES; c++) {{
      float acc = uq_classifier_b[c];
      for (int j = 0; j < {d}; j++)
        acc += uq_classifier_w[c * {d} + j] * (t1[j] * uq_masks[s * {d} + j]);
      z[c] = acc;
      if (acc > top2) top2 = acc;
    }}
    for (int c = 0; c < UQ_CLASSES; c++) {{ z[c] = expf(z[c] - top2); total2 += z[c]; }}
    for (int c = 0; c < UQ_CLASSES; c++) {{
      float p = z[c] / total2;
      mean[c] += p;
      h -= p * logf(p > 1e-30f ? p : 1e-30f);
    }}
    mean_entropy += h;
  }}
  float entropy = 0.0f;
  for (int c = 0; c < UQ_CLASSES; c++) {{
    probs[c] = mean[c] / {n}.0f;
    entropy -= probs[c] * logf(probs[c] > 1e-30f ? probs[c] : 1e-30f);
  }}
  return {mutual} ? entropy - mean_entropy / {n}.0f : entropy;"""
    elif export.kind == "early_exit":
        blocks = []
        for i in range(len(export.taps)):
            d = sizes[i + 1]
            blocks.append(f"""  {{
    float z[UQ_CLASSES], zt = -INFINITY, zs = 0.0f;
    for (int c = 0; c < UQ_CLASSES; c++) {{
      float acc = uq_exit_b_{i}[c];
      for (int j = 0; j < {d}; j++) acc += uq_exit_w_{i}[c * {d} + j] * t{i + 1}[j];
      z[c] = acc;
      if (acc > zt) zt = acc;
    }}
    for (int c = 0; c < UQ_CLASSES; c++) {{ z[c] = expf(z[c] - zt); zs += z[c]; }}
    for (int c = 0; c < UQ_CLASSES; c++) mean[c] += z[c] / zs;
  }}""")
        final = (
            "  float h = 0.0f;\n  for (int c = 0; c < UQ_CLASSES; c++) "
            "h -= mean[c] * logf(mean[c] > 1e-30f ? mean[c] : 1e-30f);\n  return h;"
            if export.params["entropy"]
            else "  float best = 0.0f;\n  for (int c = 0; c < UQ_CLASSES; c++) "
            "if (mean[c] > best) best = mean[c];\n  return 1.0f - best;"
        )
        count = len(blocks) + 1
        score = (
            "  float mean[UQ_CLASSES];\n"
            "  for (int c = 0; c < UQ_CLASSES; c++) mean[c] = probs[c];\n"
            + "\n".join(blocks)
            + f"\n  for (int c = 0; c < UQ_CLASSES; c++) {{ mean[c] = mean[c] / {count}.0f;"
            " probs[c] = mean[c]; }\n" + final
        )
    elif export.kind == "ensemble":
        # Each member's own entropy only where the score uses it (mutual information): logf is
        # no free call on a microcontroller.
        mutual = export.params["mutual_information"]
        if mutual:
            add = "{ float p = e[c] / zs; mean[c] += p; own -= p * logf(p > 1e-30f ? p : 1e-30f); }"
            own, total, kept = (
                ", own = 0.0f",
                ", members_entropy = 0.0f",
                "\n    members_entropy += own;",
            )
        else:
            add, own, total, kept = "mean[c] += e[c] / zs;", "", "", ""
        members = []
        for k in range(len(sizes)):
            members.append(f"""  {{
    float zt = -INFINITY, zs = 0.0f, e[UQ_CLASSES]{own};
    for (int c = 0; c < UQ_CLASSES; c++) if (t{k}[c] > zt) zt = t{k}[c];
    for (int c = 0; c < UQ_CLASSES; c++) {{ e[c] = expf(t{k}[c] - zt); zs += e[c]; }}
    for (int c = 0; c < UQ_CLASSES; c++) {add}{kept}
  }}""")
        score = (
            f"  float mean[UQ_CLASSES] = {{0}}{total};\n"
            + "\n".join(members)
            + "\n  float h = 0.0f;\n  for (int c = 0; c < UQ_CLASSES; c++) {\n"
            f"    probs[c] = mean[c] / {len(sizes)}.0f;\n"
            "    h -= probs[c] * logf(probs[c] > 1e-30f ? probs[c] : 1e-30f);\n  }\n"
            + (f"  return h - members_entropy / {len(sizes)}.0f;" if mutual else "  return h;")
        )
    elif export.kind == "evidential":
        eta = float(np.float32(export.params["eta"]))
        tail = ("  return (float)UQ_CLASSES / s;" if export.params["vacuity"] else
                "  float best = 0.0f;\n  for (int c = 0; c < UQ_CLASSES; c++) "
                "if (probs[c] > best) best = probs[c];\n  return 1.0f - best;")  # fmt: skip
        score = f"""  float s = 0.0f;
  for (int c = 0; c < UQ_CLASSES; c++) {{
    float soft = t0[c] > 20.0f ? t0[c] : log1pf(expf(t0[c]));
    probs[c] = {eta!r}f * soft + 1.0f;
    s += probs[c];
  }}
  for (int c = 0; c < UQ_CLASSES; c++) probs[c] = probs[c] / s;
{tail}"""
    else:
        p = export.params
        eps2, low, high = (float(np.float32(p[k])) for k in ("eps2", "logvar_min", "logvar_max"))
        step, levels = float(np.float32(p["step"])), len(export.constants["lut"])
        parts = []
        for h in range(int(p["heads"])):
            prev, target = 2 * h + 1, 2 * h + 2
            c_in, d = sizes[prev], sizes[target]
            rank = export.constants[f"project_b_{h}"].shape[0]
            parts.append(f"""  {{
    float z[{rank}], e = 0.0f;
    for (int r = 0; r < {rank}; r++) {{  /* int8 projector: exact int32 dot product */
      int32_t acc = 0;
      for (int i = 0; i < {c_in}; i++)
        acc += uq_project_q_{h}[r * {c_in} + i] * (out[UQ_OUT{prev}_AT + i] - uq_zero{prev});
      z[r] = (float)acc * uq_project_scale_{h}[r] + uq_project_b_{h}[r];
    }}
    for (int j = 0; j < {d}; j++) {{  /* int8 heads, float32 accumulation */
      float mu = 0.0f, xi = 0.0f;
      for (int r = 0; r < {rank}; r++) {{
        mu += (float)uq_heads_q_{h}[j * {rank} + r] * z[r];
        xi += (float)uq_heads_q_{h}[({d} + j) * {rank} + r] * z[r];
      }}
      mu = mu * uq_heads_scale_{h}[j] + uq_heads_b_{h}[j];
      xi = xi * uq_heads_scale_{h}[{d} + j] + uq_heads_b_{h}[{d} + j];
      float soft = xi > 20.0f ? xi : log1pf(expf(xi));
      float logvar = logf(soft + {eps2!r}f);
      if (logvar < {low!r}f) logvar = {low!r}f;
      if (logvar > {high!r}f) logvar = {high!r}f;
      int level = (int)floorf((logvar - {low!r}f) / {step!r}f + 0.5f);
      level = level < 0 ? 0 : (level > {levels - 1} ? {levels - 1} : level);
      float v = t{target}[j] - mu;
      e += v * v * uq_lut[level];  /* exp(-log sigma^2), 256 entries */
    }}
    snap += uq_tap_weights[{h}] * (e / {d}.0f);
  }}""")
        alpha = float(np.float32(p["alpha"]))
        score = (
            "  float snap = 0.0f;\n" + "\n".join(parts) + "\n"
            "  float p1 = 0.0f, p2 = 0.0f;\n"
            "  for (int i = 0; i < UQ_CLASSES; i++) {\n"
            "    if (probs[i] > p1) { p2 = p1; p1 = probs[i]; }\n"
            "    else if (probs[i] > p2) p2 = probs[i];\n"
            "  }\n"
            f"  float m = {alpha!r}f * (1.0f - p1) + (1.0f - {alpha!r}f) * (1.0f - (p1 - p2));\n"
            "  return uq_map[0] + uq_map[1] * snap + uq_map[2] * m;"
        )
    return (
        "\n".join(lines) + "\n" + body
        + "\nfloat uq_score(const int8_t *out, float *probs) {\n"
        + deq + "\n" + softmax + "\n" + score + "\n}\n"
    )  # fmt: skip


def c_source(export: LogitScore, classes: int, scale: float, zero_point: int) -> str:
    """``uq_score.c``: ``float uq_score(const int8_t *logits, float *probs)``."""
    kind = {"msp": 0, "entropy": 1, "energy": 2}[export.kind]
    scale32, temperature = float(np.float32(scale)), float(export.temperature)
    return f"""/* Generated by uqbench: the uncertainty score from the int8 logits (float32). */
#include <math.h>
#include <stdint.h>
#define UQ_CLASSES {classes}
#define UQ_KIND {kind} /* 0: 1 - max p, 1: entropy, 2: energy */
static const float uq_scale = {scale32!r}f;
static const float uq_temperature = {temperature!r}f;
static const int32_t uq_zero = {int(zero_point)};

float uq_score(const int8_t *logits, float *probs) {{
  float z[UQ_CLASSES], top = -INFINITY, total = 0.0f;
  for (int i = 0; i < UQ_CLASSES; i++) {{
    z[i] = (float)(logits[i] - uq_zero) * uq_scale / uq_temperature;
    if (z[i] > top) top = z[i];
  }}
  for (int i = 0; i < UQ_CLASSES; i++) {{
    probs[i] = expf(z[i] - top);
    total += probs[i];
  }}
  float best = 0.0f, entropy = 0.0f;
  for (int i = 0; i < UQ_CLASSES; i++) {{
    probs[i] = probs[i] / total;
    if (probs[i] > best) best = probs[i];
    entropy -= probs[i] * logf(probs[i] > 1e-30f ? probs[i] : 1e-30f);
  }}
#if UQ_KIND == 0
  (void)entropy;
  return 1.0f - best;
#elif UQ_KIND == 1
  (void)best;
  return entropy;
#else
  (void)best; (void)entropy;
  return -uq_temperature * (top + logf(total));
#endif
}}
"""
