"""C source for an int8 graph: weights as ``const`` arrays in flash, one statically planned
arena, calls into the project's kernels (``deploy/c/uq_kernels.c``), one entry point.

``generate(graph)`` gives ``model.h`` / ``model.c`` with::

    void uq_infer(const int8_t *input, int8_t *output);   /* NHWC int8 in; int8 logits out,
                                                              then any pooled taps */

plus the arena size. The requantization constants (Q31 multipliers and shifts) are computed here
with the same functions the host reference uses, so firmware, host reference and TFLite Micro
share one arithmetic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from uqbench.deploy.arena import ArenaPlan, plan_arena
from uqbench.deploy.graph import Graph, Op
from uqbench.deploy.int8 import quantize_multiplier
from uqbench.deploy.reference import (
    ADD_LEFT_SHIFT,
    activation_range,
    mul_multiplier,
    output_multipliers,
)

C_DIR = Path(__file__).parent / "c"
KERNEL_FILES = ("uq_kernels.h", "uq_kernels.c", "uq_kernels_dsp.c")


def _ident(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def _array(ctype: str, name: str, values: np.ndarray) -> str:
    flat = np.asarray(values).ravel()
    body = ",".join(str(int(v)) for v in flat)
    return f"static const {ctype} {name}[{len(flat)}] = {{{body}}};\n"


# The longest patch the DSP kernels take (UQ_MAX_PATCH in c/uq_kernels_dsp.c); longer ones run
# the reference kernel, which reads the weights in their natural layout.
DSP_MAX_PATCH = 640


# The buffers of the DSP depthwise planes path (DW_PLANE_BYTES, DW_SUMS in c/uq_kernels_dsp.c).
DW_PLANE_BYTES, DW_SUMS = 3072, 256


def takes_planes(
    h: int, w: int, c: int, kernel: tuple[int, int], stride: tuple[int, int], shifts
) -> bool:
    """Whether a depthwise layer (input h x w x c) runs on the DSP kernels' planes path
    (``uq_depthwise_planes``): a 3 x 3 kernel, equal strides of 1 or 2, channels in fours, every
    requantization shift a right shift by 2 or more, and lines short enough for a band of three
    within the buffers. The same conditions as the C kernel's, which falls back to the
    reference kernel where they fail."""
    sh, sw = stride
    if tuple(kernel) != (3, 3) or sh != sw or sh not in (1, 2) or c % 4 or max(shifts) > -2:
        return False
    oh, ow = (h - 3) // sh + 1, (w - 3) // sh + 1
    length, out_length = (w, ow) if ow >= oh else (h, oh)
    max_lines = DW_PLANE_BYTES // (8 * ((length + 2) & ~1))
    return max_lines >= 3 and min((max_lines - 3) // sh + 1, DW_SUMS // out_length) >= 1


def dsp_weight_layout(weights: np.ndarray) -> np.ndarray:
    """Weights [O, K] (rows of a convolution or fully connected layer, OHWI flattened) in the
    order the DSP kernels read them: each pair of rows (o, o + 1) as, per group of 4 inputs,
    4 bytes of row o then 4 of row o + 1, then row o's K % 4 tail and row o + 1's; an odd last
    row as it is. The same bytes, reordered."""
    rows = np.asarray(weights).reshape(len(weights), -1)
    k = rows.shape[1]
    k4 = k - k % 4
    parts = []
    for o in range(0, len(rows) - 1, 2):
        pair = rows[o : o + 2]
        groups = pair[:, :k4].reshape(2, k4 // 4, 4).transpose(1, 0, 2)  # [group, row, 4]
        parts += [groups.ravel(), pair[0, k4:], pair[1, k4:]]
    if len(rows) % 2:
        parts.append(rows[-1])
    return np.concatenate(parts) if parts else rows.ravel()


class _Emitter:
    """C for one graph's operators: its constants (``constants``) and its kernel calls.

    With ``shared`` (a dict kept across the graphs of an ensemble), weights, biases and
    constant factors equal to another graph's are defined once: the first graph to use them
    writes the definition into ``shared`` (text by content), and every graph declares them
    ``extern`` under its own name. MC dropout's passes share every weight this way."""

    def __init__(self, graph: Graph, plan: ArenaPlan, shared: dict[str, str] | None = None):
        self.graph, self.plan, self.shared = graph, plan, shared
        self.constants: list[str] = []
        self.calls: list[str] = []

    def constant(self, ctype: str, name: str, definition: str, size: int) -> None:
        """Define the array ``name`` (``definition``: its C text under that name), or, sharing,
        refer to the one definition of the same content."""
        if self.shared is None:
            self.constants.append(definition)
            return
        body = definition.replace(f" {name}[", " @[")
        key = hashlib.sha256(body.encode()).hexdigest()[:16]
        symbol = f"uq_shared_{key}"
        self.shared.setdefault(symbol, body.replace("static const", "const").replace("@", symbol))
        self.constants.append(f"extern const {ctype} {symbol}[{size}];\n#define {name} {symbol}\n")

    def ptr(self, name: str) -> str:
        return f"(uq_arena + {self.plan.offsets[name]})"

    def shape(self, name: str) -> tuple[int, ...]:
        return self.graph.tensors[name].shape

    def requant(self, op: Op, tag: str) -> str:
        names = (op.inputs[0], op.inputs[1], op.outputs[0])
        inp, weight, out = (self.graph.tensors[n] for n in names)
        multipliers, shifts = output_multipliers(inp, weight, out)
        channels = weight.data.shape[0] if op.kind != "depthwise_conv2d" else weight.data.shape[3]
        multipliers = np.broadcast_to(multipliers, channels)
        shifts = np.broadcast_to(shifts, channels)
        low, high = activation_range(op.options.get("activation", "none"), out)
        self.constants.append(_array("int32_t", f"{tag}_m", multipliers))
        self.constants.append(_array("int32_t", f"{tag}_s", shifts))
        self.constants.append(
            f"static const uq_requant {tag}_q = {{{int(inp.qparams.zero_point[0])}, "
            f"{int(out.qparams.zero_point[0])}, {low}, {high}, {tag}_m, {tag}_s}};\n"
        )
        return f"&{tag}_q"

    def weights(self, op: Op, tag: str) -> None:
        weight, bias = (self.graph.tensors[n] for n in op.inputs[1:3])
        data = weight.data
        rows = data.reshape(len(data), -1)
        if op.kind != "depthwise_conv2d" and rows.shape[1] <= DSP_MAX_PATCH:
            # The DSP kernels read pairs of rows interleaved; the reference kernels (and the
            # DSP ones' fallback for longer patches) read them as they are.
            definition = (
                "#if UQ_DSP\n"
                + _array("int8_t", f"{tag}_w", dsp_weight_layout(rows))
                + "#else\n"
                + _array("int8_t", f"{tag}_w", data)
                + "#endif\n"
            )
        else:
            definition = _array("int8_t", f"{tag}_w", data)
        self.constant("int8_t", f"{tag}_w", definition, data.size)
        self.constant(
            "int32_t", f"{tag}_b", _array("int32_t", f"{tag}_b", bias.data), bias.data.size
        )

    def emit(self, index: int, op: Op) -> None:
        tag = f"op{index}"
        x, y = op.inputs[0], op.outputs[0]
        if op.kind in ("conv2d", "depthwise_conv2d"):
            self.weights(op, tag)
            q = self.requant(op, tag)
            _, h, w, c = self.shape(x)
            kh, kw = self.graph.tensors[op.inputs[1]].data.shape[1:3]
            sh, sw = op.options["stride"]
            if op.kind == "conv2d":
                o = self.graph.tensors[op.inputs[1]].data.shape[0]
                self.calls.append(
                    f"uq_conv2d({self.ptr(x)}, {h}, {w}, {c}, {tag}_w, {tag}_b, {o}, {kh}, {kw}, "
                    f"{sh}, {sw}, {q}, {self.ptr(y)});"
                )
            else:
                call = (
                    f"uq_depthwise({self.ptr(x)}, {h}, {w}, {c}, {tag}_w, {tag}_b, {kh}, {kw}, "
                    f"{sh}, {sw}, {q}, {self.ptr(y)});"
                )
                names = (op.inputs[0], op.inputs[1], op.outputs[0])
                _, shifts = output_multipliers(*(self.graph.tensors[n] for n in names))
                if takes_planes(h, w, c, (kh, kw), (sh, sw), np.atleast_1d(shifts)):
                    # Only the kernel a layer takes is linked: the planes path needs no other.
                    planes = (
                        f"uq_depthwise_planes({self.ptr(x)}, {h}, {w}, {c}, {tag}_w, {tag}_b, "
                        f"{sh}, {q}, {self.ptr(y)});"
                    )
                    call = f"\n#if UQ_DSP\n  {planes}\n#else\n  {call}\n#endif"
                self.calls.append(call)
        elif op.kind == "fully_connected":
            self.weights(op, tag)
            q = self.requant(op, tag)
            k = int(np.prod(self.shape(x)[1:]))
            o = self.graph.tensors[op.inputs[1]].data.shape[0]
            args = f"{self.ptr(x)}, {k}, {tag}_w, {tag}_b, {o}, {q}, {self.ptr(y)}"
            self.calls.append(f"uq_fully_connected({args});")
        elif op.kind in ("average_pool_2d", "max_pool_2d"):
            _, h, w, c = self.shape(x)
            kh, kw = op.options["filter"]
            sh, sw = op.options["stride"]
            activation = op.options.get("activation", "none")
            low, high = activation_range(activation, self.graph.tensors[y])
            kernel = "uq_average_pool" if op.kind == "average_pool_2d" else "uq_max_pool"
            self.calls.append(
                f"{kernel}({self.ptr(x)}, {h}, {w}, {c}, {kh}, {kw}, {sh}, {sw}, {low}, {high}, "
                f"{self.ptr(y)});"
            )
        elif op.kind == "pad":
            _, h, w, c = self.shape(x)
            (top, bottom), (left, right) = op.options["paddings"]
            zero = int(self.graph.tensors[x].qparams.zero_point[0])
            self.calls.append(
                f"uq_pad({self.ptr(x)}, {h}, {w}, {c}, {top}, {bottom}, {left}, {right}, {zero}, "
                f"{self.ptr(y)});"
            )
        elif op.kind == "add":
            a, b = (self.graph.tensors[n] for n in op.inputs)
            out = self.graph.tensors[y]
            sa, sb, so = (float(t.qparams.scale[0]) for t in (a, b, out))
            twice = 2 * max(sa, sb)
            ma, ea = quantize_multiplier(sa / twice)
            mb, eb = quantize_multiplier(sb / twice)
            mo, eo = quantize_multiplier(twice / ((1 << ADD_LEFT_SHIFT) * so))
            low, high = activation_range(op.options.get("activation", "none"), out)
            n = int(np.prod(out.shape))
            self.calls.append(
                f"uq_add({self.ptr(op.inputs[0])}, {self.ptr(op.inputs[1])}, {n}, "
                f"{int(a.qparams.zero_point[0])}, {ma}, {ea}, {int(b.qparams.zero_point[0])}, "
                f"{mb}, {eb}, {int(out.qparams.zero_point[0])}, {mo}, {eo}, {low}, {high}, "
                f"{self.ptr(y)});"
            )
        elif op.kind == "mul":  # by a constant factor: in flash, or a regenerated mask
            a, b, out = (self.graph.tensors[n] for n in (*op.inputs, y))
            m, e = mul_multiplier(a, b, out)
            low, high = activation_range(op.options.get("activation", "none"), out)
            zero_a, zero_b = int(a.qparams.zero_point[0]), int(b.qparams.zero_point[0])
            zero_out, n = int(out.qparams.zero_point[0]), b.data.size
            dropout = op.options.get("dropout")
            if dropout:  # a mask the firmware regenerates (uqbench.dropout_masks): no constant
                from uqbench import dropout_masks

                dims = self.shape(x)  # NHWC, or [1, F] for a vector (F channels of 1 x 1)
                _, h, w, c = (1, 1, 1, dims[1]) if len(dims) == 2 else dims
                stream = dropout_masks.stream(dropout["site"], dropout["pass"])
                kept = int(b.data.max()) - zero_b
                self.calls.append(
                    f"uq_mul_dropout({self.ptr(x)}, {h}, {w}, {c}, {stream}u, "
                    f"{dropout_masks.threshold(dropout['p'])}u, {zero_a}, {kept}, {zero_out}, {m}, "
                    f"{e}, {low}, {high}, {self.ptr(y)});"
                )
            else:
                self.constant("int8_t", f"{tag}_f", _array("int8_t", f"{tag}_f", b.data), n)
                self.calls.append(
                    f"uq_mul({self.ptr(x)}, {tag}_f, {n}, {zero_a}, {zero_b}, {zero_out}, {m}, "
                    f"{e}, {low}, {high}, {self.ptr(y)});"
                )
        elif op.kind == "reshape":
            pass  # the same bytes: the arena plan aliases it
        else:
            raise ValueError(f"no C kernel for {op.kind!r}")


def generate(
    graph: Graph,
    stem: str = "model",
    shared_arena: bool = False,
    shared: dict[str, str] | None = None,
) -> tuple[dict[str, str], ArenaPlan]:
    """``{file name: C source}`` for the graph and the kernels, and the arena plan.

    ``stem`` names the files and the entry point (``model`` -> ``model.c``, ``uq_infer``;
    ``model_1`` -> ``model_1.c``, ``uq_infer_model_1``). With ``shared_arena`` the arena is
    ``extern``: several networks run one after another (an ensemble's members) and a wrapper
    (:func:`ensemble`) defines one arena of the largest size for all of them; ``shared``
    collects the constants they have in common (see :class:`_Emitter`).
    """
    plan = plan_arena(graph)
    emitter = _Emitter(graph, plan, shared)
    # Each output is copied into the caller's buffer (outputs concatenated, logits first) as
    # soon as it is written, so the arena can reuse its bytes.
    placed, cursor = {}, 0
    for name in graph.outputs:
        placed[name] = cursor
        cursor += int(np.prod(graph.tensors[name].shape))
    copied = set()
    for index, op in enumerate(graph.ops):
        emitter.emit(index, op)
        for name in op.outputs:
            if name in placed and name not in copied:
                size = int(np.prod(graph.tensors[name].shape))
                emitter.calls.append(
                    f"memcpy(output + {placed[name]}, {emitter.ptr(name)}, {size});"
                )
                copied.add(name)
    inp = graph.inputs[0]
    in_bytes = int(np.prod(graph.tensors[inp].shape))
    out_bytes = cursor
    entry = "uq_infer" if stem == "model" else f"uq_infer_{stem}"
    guard = f"UQ_{stem.upper()}_H"
    header = (
        f"/* Generated by uqbench: the int8 network. */\n#ifndef {guard}\n#define {guard}\n"
        "#include <stdint.h>\n"
        f"#define UQ_INPUT_BYTES {in_bytes}\n"
        + ("" if shared_arena else f"#define UQ_OUTPUT_BYTES {out_bytes}\n")
        + f"void {entry}(const int8_t *input, int8_t *output);\n#endif\n"
    )
    arena = (
        "extern int8_t uq_arena[];\n"
        if shared_arena
        else f"static int8_t uq_arena[{plan.size}] __attribute__((aligned(4)));\n"
    )
    body = "\n".join(f"  {call}" for call in emitter.calls)
    source = (
        "/* Generated by uqbench: weights in flash, one statically planned arena. */\n"
        f'#include <string.h>\n#include "{stem}.h"\n#include "uq_kernels.h"\n\n'
        + "".join(emitter.constants)
        + f"\n{arena}\n"
        f"void {entry}(const int8_t *input, int8_t *output) {{\n"
        f"  memcpy(uq_arena + {plan.offsets[inp]}, input, UQ_INPUT_BYTES);\n"
        f"{body}\n"
        "}\n"
    )
    files = {f"{stem}.h": header, f"{stem}.c": source}
    files.update({name: (C_DIR / name).read_text() for name in KERNEL_FILES})
    return files, plan


def ensemble(graphs: list[Graph]) -> tuple[dict[str, str], list[ArenaPlan]]:
    """C for networks run one after another on the same input (an ensemble's members): one
    file pair per member sharing one arena of the largest member's size, and ``model.c`` whose
    ``uq_infer`` writes every member's outputs, concatenated, member by member."""
    files: dict[str, str] = {}
    plans, sizes, shared = [], [], {}
    for k, graph in enumerate(graphs):
        member, plan = generate(graph, f"member_{k}", shared_arena=True, shared=shared)
        files.update(member)
        plans.append(plan)
        sizes.append(sum(int(np.prod(graph.tensors[n].shape)) for n in graph.outputs))
    in_bytes = int(np.prod(graphs[0].tensors[graphs[0].inputs[0]].shape))
    calls = "".join(
        f"  uq_infer_member_{k}(input, output + {sum(sizes[:k])});\n" for k in range(len(graphs))
    )
    includes = "".join(f'#include "member_{k}.h"\n' for k in range(len(graphs)))
    files["model.h"] = (
        "/* Generated by uqbench: an ensemble of int8 networks. */\n#ifndef UQ_MODEL_H\n"
        "#define UQ_MODEL_H\n#include <stdint.h>\n"
        f"#define UQ_INPUT_BYTES {in_bytes}\n#define UQ_OUTPUT_BYTES {sum(sizes)}\n"
        "void uq_infer(const int8_t *input, int8_t *output);\n#endif\n"
    )
    files["model.c"] = (
        "/* Generated by uqbench: the members run one after another in one arena. */\n"
        f'#include "model.h"\n{includes}'
        f"int8_t uq_arena[{max(p.size for p in plans)}] __attribute__((aligned(4)));\n\n"
        f"void uq_infer(const int8_t *input, int8_t *output) {{\n{calls}}}\n"
    )
    files["uq_shared.c"] = (
        "/* Generated by uqbench: the members' constants, each defined once. */\n"
        '#include <stdint.h>\n#include "uq_kernels.h"\n\n' + "".join(shared.values())
    )
    return files, plans
