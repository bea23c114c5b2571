"""The device-score contract: what a method runs on the device after its network.

A method describes its device form by returning, from ``UQMethod.device_export()``, either a
:class:`DeviceScore` (the backbone runs once, then the score) or an :class:`Ensemble` (several
networks run one after another, then the score over all their outputs), or ``None`` when it
has no device form (``device_export_reason()`` then says why).

A :class:`DeviceScore` holds, side by side:

- ``taps``: what the int8 graph outputs after the logits, in this order: a tap's name for its
  globally average-pooled vector ([C] int8; ``penultimate`` is the vector the classifier
  reads), or ``<tap>:map`` for the whole map ([H, W, C] int8, NHWC);
- ``fitted``: float32 (or int8) arrays compiled into flash; ``constants(outputs)`` may derive
  the final ones from the outputs' quantization (SNAP-UQ folds its input scale);
- ``host(codes, outputs)``: the float32 host reference of the device's computation, the oracle
  the firmware is checked against, in the same order of operations;
- ``c_body(outputs)``: the C body of ``uq_score`` (the ABI below);
- ``scratch_floats(outputs)``: the floats of working memory the body needs beyond the
  dequantized outputs (RAM, declared: the checks compare it with the firmware's symbol).

Each kind is one class registered in the ``uqbench.device_scores`` entry-point group under its
``kind``, the way boards are; a third-party package ships its own the same way.

**The C ABI.** :func:`c_source` wraps the body into ``uq_score.c``::

    float uq_score(const int8_t *out, float *probs);

``out`` is the graph's int8 outputs concatenated (logits first; an ensemble's members' logits
one after another); ``probs`` receives ``UQ_CLASSES`` float32 probabilities; the return value is
the score, higher = more uncertain. The body sees:

- ``UQ_CLASSES``; per output ``k``: ``UQ_OUT<k>_SIZE``, ``UQ_OUT<k>_AT`` (its first byte in
  ``out``), ``uq_scale<k>`` (float) and ``uq_zero<k>`` (int32): real = (code - zero) * scale;
- ``t<k>``: ``float *``, output ``k`` dequantized, for every output in ``dequantized()`` (by
  default all but whole maps, which the body reads in place from ``out``);
- ``uq_work``: ``float *``, the score's own ``scratch_floats`` (both live in one static
  ``uq_scratch`` buffer; per-class arrays of ``UQ_CLASSES`` floats may live on the stack);
- each constant as ``uq_<name>``: ``static const float`` (``int8_t`` for int8 arrays), flat;
- ``uq_softmax(z, p, n)`` and ``uq_entropy(p, n)`` (float32, the order of :func:`softmax` and
  :func:`entropy` on the host).

Firmware and host agree to float32 rounding (newlib's ``expf``/``logf`` against NumPy's, sums
in another order): ``|firmware - host| <= tolerance * |host| + abs_tolerance`` per example. The
absolute term covers scores that cancel terms of order one (``1 - max p`` of a confident
prediction is 1e-6 with an error of a few float32 steps of 1.0, a large relative error).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

f32 = np.float32
MAP = ":map"  # a tap name ending so is output unpooled (its whole int8 map, NHWC order)


@dataclass(frozen=True)
class Output:
    """One int8 output of the device's network(s) as the score reads it: ``shape`` (no batch
    axis: [C] or [H, W, C]) int8 codes starting at byte ``offset`` of the concatenated
    outputs; real value = (code - ``zero_point``) * ``scale``."""

    name: str
    shape: tuple[int, ...]
    offset: int
    scale: float
    zero_point: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def codes(self, outputs: np.ndarray) -> np.ndarray:
        """This output's codes in ``outputs`` [B, total bytes], as int32 [B, size]."""
        return np.asarray(outputs[:, self.offset : self.offset + self.size], dtype=np.int32)

    def dequantize(self, outputs: np.ndarray) -> np.ndarray:
        """This output's real values in ``outputs`` [B, total bytes], float32 [B, size]."""
        return (self.codes(outputs) - self.zero_point).astype(f32) * f32(self.scale)


@dataclass(frozen=True, eq=False)
class DeviceScore(ABC):
    """What the device computes from the int8 outputs (see the module's docstring). Subclasses
    are frozen dataclasses: set ``kind`` (their registered name), add their parameters as
    fields with defaults, implement :meth:`host` and :meth:`c_body`."""

    kind: ClassVar[str] = ""
    tolerance: ClassVar[float] = 1e-4  # relative, firmware against host
    abs_tolerance: ClassVar[float] = 1e-6  # absolute: about 8 float32 steps of 1.0

    taps: tuple[str, ...] = ()
    fitted: dict[str, np.ndarray] = field(default_factory=dict)

    def constants(self, outputs: Sequence[Output]) -> dict[str, np.ndarray]:
        """The arrays compiled into flash, by name (``uq_<name>`` in C)."""
        return self.fitted

    def dequantized(self, outputs: Sequence[Output]) -> list[int]:
        """The outputs the body reads as ``t<k>`` floats (the others in place from ``out``)."""
        return [k for k, o in enumerate(outputs) if not o.name.endswith(MAP)]

    def scratch_floats(self, outputs: Sequence[Output]) -> int:
        """Floats of working memory the body uses as ``uq_work``, beyond the ``t<k>``."""
        return 0

    @abstractmethod
    def host(self, outputs: np.ndarray, layout: Sequence[Output]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [B, C], score [B]), float32, from the concatenated int8 ``outputs``
        [B, total bytes] laid out as ``layout``: the device's computation on the host."""

    @abstractmethod
    def c_body(self, outputs: Sequence[Output]) -> str:
        """The body of ``uq_score`` (see the module's docstring for what it can use)."""

    def agreement(self, firmware: np.ndarray, host: np.ndarray) -> dict[str, Any]:
        """How the firmware's scores compare with the host reference's on the same examples."""
        difference = np.abs(np.asarray(firmware, np.float64) - np.asarray(host, np.float64))
        allowed = self.tolerance * np.abs(host) + self.abs_tolerance
        return {
            "score_max_absolute_difference": float(difference.max()),
            "score_max_relative_difference": float(
                (difference / np.maximum(np.abs(host), 1e-6)).max()
            ),
            "score_tolerance": {"relative": self.tolerance, "absolute": self.abs_tolerance},
            "score_within_tolerance": bool((difference <= allowed).all()),
        }

    def params(self) -> dict[str, Any]:
        """The score's parameters (its fields but ``taps`` and ``fitted``), JSON-ready."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("taps", "fitted")
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "taps": list(self.taps),
            "params": self.params(),
            "constants": {name: list(np.shape(v)) for name, v in self.fitted.items()},
        }


@dataclass(frozen=True)
class Ensemble:
    """Networks run one after another on the same input, then ``score`` over their outputs
    (each member's logits, in order): a deep ensemble's members, or MC dropout's passes (each
    the backbone with one pass's fixed masks)."""

    members: tuple  # torch modules with the backbone interface, in order
    score: DeviceScore
    what: str = "deep ensemble members"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "ensemble",
            "what": self.what,
            "members": len(self.members),
            "score": self.score.to_dict(),
        }


# ---------------------------------------------------------------- float32 host building blocks
def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax of each row [B, C] in float32 (C: :c:func:`uq_softmax`)."""
    e = np.exp(z - z.max(1, keepdims=True), dtype=f32)
    return (e / e.sum(1, keepdims=True, dtype=f32)).astype(f32)


def entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of each row of probabilities [B, C] in float32 (C: :c:func:`uq_entropy`)."""
    return -(p * np.log(np.maximum(p, f32(1e-30)), dtype=f32)).sum(1, dtype=f32)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + e^x) in float32, x itself above 20 (C: ``x > 20 ? x : log1pf(expf(x))``)."""
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20), dtype=f32))).astype(f32)


def c_float(value: float) -> str:
    """A float32 literal in C."""
    return f"{float(f32(value))!r}f"


# ---------------------------------------------------------------- uq_score.c
_HELPERS = """static inline void uq_softmax(const float *z, float *p, int n) {
  float top = -INFINITY, total = 0.0f;
  for (int i = 0; i < n; i++) if (z[i] > top) top = z[i];
  for (int i = 0; i < n; i++) { p[i] = expf(z[i] - top); total += p[i]; }
  for (int i = 0; i < n; i++) p[i] = p[i] / total;
}

static inline float uq_entropy(const float *p, int n) {
  float h = 0.0f;
  for (int i = 0; i < n; i++) h -= p[i] * logf(p[i] > 1e-30f ? p[i] : 1e-30f);
  return h;
}
"""


def scratch_buffer_floats(score: DeviceScore, outputs: Sequence[Output]) -> int:
    """The floats of ``uq_scratch``: the dequantized outputs, then the score's own."""
    return sum(outputs[k].size for k in score.dequantized(outputs)) + score.scratch_floats(outputs)


def c_array(name: str, values: np.ndarray) -> str:
    """A constant array in C: int8 arrays stay int8 (a byte each in flash), others float32."""
    values = np.asarray(values)
    ctype = "int8_t" if values.dtype == np.int8 else "float"
    flat = values.ravel() if values.dtype == np.int8 else values.astype(f32).ravel()
    body = ",".join(str(int(v)) if ctype == "int8_t" else f"{v!r}f" for v in flat.tolist())
    return f"static const {ctype} {name}[{len(flat)}] = {{{body}}};\n"


def c_source(score: DeviceScore, outputs: Sequence[Output]) -> str:
    """``uq_score.c``: ``float uq_score(const int8_t *out, float *probs)`` (the ABI in the
    module's docstring) around ``score.c_body(outputs)``."""
    lines = [
        f"/* Generated by uqbench: the {score.kind} device score (float32). */",
        "#include <math.h>",
        "#include <stdint.h>",
        f"#define UQ_CLASSES {outputs[0].size}",
    ]
    for k, o in enumerate(outputs):
        lines += [
            f"#define UQ_OUT{k}_SIZE {o.size} /* {o.name} */",
            f"#define UQ_OUT{k}_AT {o.offset}",
            f"static const float uq_scale{k} = {c_float(o.scale)};",
            f"static const int32_t uq_zero{k} = {int(o.zero_point)};",
        ]
    constants = "".join(c_array(f"uq_{n}", v) for n, v in score.constants(outputs).items())
    total = scratch_buffer_floats(score, outputs)
    buffer = f"float uq_scratch[{total}]; /* the declared scratch */\n" if total else ""
    views, at = [], 0
    for k in score.dequantized(outputs):
        views.append(
            f"  float *t{k} = uq_scratch + {at};\n"
            f"  for (int i = 0; i < UQ_OUT{k}_SIZE; i++) "
            f"t{k}[i] = (float)(out[UQ_OUT{k}_AT + i] - uq_zero{k}) * uq_scale{k};"
        )
        at += outputs[k].size
    if score.scratch_floats(outputs):
        views.append(f"  float *uq_work = uq_scratch + {at};")
    parts = [
        "\n".join(lines),
        constants + buffer,
        _HELPERS,
        "float uq_score(const int8_t *out, float *probs) {",
        *views,
        score.c_body(outputs).rstrip(),
        "}\n",
    ]
    return "\n".join(parts)
