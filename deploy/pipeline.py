"""The deploy pipeline, one job per step, driven from a method and its data.

1. :func:`device_form`: the method's export (:mod:`uqbench.deploy.device_score`) or why none.
2. :func:`convert`: each network the device runs as an int8 graph (activation ranges from
   calibration batches), the score and the layout of the graphs' outputs: a
   :class:`DeviceModel`, whose :meth:`~DeviceModel.outputs` is the int8 host reference.
3. :func:`verify_tflite_micro`: the host reference against TFLite Micro, bit for bit.
4. :func:`sources`: the C sources: the networks, the kernels and ``uq_score.c``.
5. :func:`measure`: per board, build and run the firmware under QEMU (bit-exact outputs, the
   score within its tolerance), then profile it and split its costs against BASE.

:func:`uqbench.deploy.quality.compare` (int8 against float on every evaluation set) and the
deploy stage (a finished run's folders) sit on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from uqbench.deploy.device_score import (
    DeviceScore,
    Ensemble,
    Output,
    c_source,
    scratch_buffer_floats,
)
from uqbench.deploy.graph import Graph

from uqbench.errors import UQBenchError


class BitExactMismatch(UQBenchError):
    pass


def device_form(method: Any) -> tuple[DeviceScore | Ensemble | None, str]:
    """(the method's export, "") or (None, why it has no device form)."""
    export = method.device_export()
    if export is None:
        return None, method.device_export_reason()
    if not isinstance(export, DeviceScore | Ensemble):
        return None, (
            f"{type(method).__name__}.device_export() returned a {type(export).__name__}, not a "
            f"DeviceScore or Ensemble (uqbench.deploy.device_score)"
        )
    return export, ""


@dataclass
class DeviceModel:
    """What the device runs: ``graphs`` (one per network, run one after another in one arena)
    then ``score`` over their concatenated int8 outputs, laid out as ``layout``."""

    export: DeviceScore | Ensemble
    networks: list[torch.nn.Module]
    graphs: list[Graph]
    score: DeviceScore
    layout: list[Output] = field(default_factory=list)

    def quantize(self, x: torch.Tensor) -> np.ndarray:
        """Float inputs [B, *input_shape] as the int8 input codes (every network calibrated on
        the same inputs, so the first's input quantization is every network's)."""
        from uqbench.deploy.convert import quantize_input

        return quantize_input(self.graphs[0], x)

    def outputs(self, q: np.ndarray) -> np.ndarray:
        """Every network's int8 outputs on int8 inputs ``q``, concatenated [B, total bytes]:
        the host reference of the device's networks."""
        from uqbench.deploy.reference import run

        parts = []
        for g in self.graphs:
            values = run(g, q)
            parts += [values[n].reshape(len(q), -1) for n in g.outputs]
        return np.concatenate(parts, 1)

    def host_scores(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, score) in float32 from int8 ``outputs``, as the device computes them."""
        return self.score.host(outputs, self.layout)

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, score) of the device on float inputs ``x``."""
        return self.host_scores(self.outputs(self.quantize(x)))


def layout(graphs: list[Graph], taps: tuple[str, ...]) -> list[Output]:
    """The outputs of ``graphs`` in the order the device concatenates them, with their names
    (``logits``, then the score's taps; ``member <k> logits`` for several networks)."""
    found, offset = [], 0
    for k, g in enumerate(graphs):
        names = ("logits", *taps) if len(graphs) == 1 else (f"member {k} logits",)
        for name, tensor in zip(names, g.outputs, strict=True):
            t = g.tensors[tensor]
            shape = tuple(int(v) for v in t.shape[1:])
            qp = t.qparams
            found.append(Output(name, shape, offset, float(qp.scale[0]), int(qp.zero_point[0])))
            offset += int(np.prod(shape))
    return found


def convert(
    method: Any, export: DeviceScore | Ensemble, calibration: list[torch.Tensor]
) -> DeviceModel:
    """The networks of ``export`` as int8 graphs, activation ranges from ``calibration``
    (batches of float inputs). Raises :class:`~uqbench.deploy.convert.NotDeployable` when a
    network has no int8 form."""
    from uqbench.deploy.convert import to_graph

    if isinstance(export, Ensemble):
        networks, score = list(export.members), export.score
    else:
        networks, score = [method.backbone.eval()], export
    graphs = [to_graph(n.eval(), calibration, score.taps) for n in networks]
    return DeviceModel(export, networks, graphs, score, layout(graphs, score.taps))


def verify_tflite_micro(
    model: DeviceModel, sample: np.ndarray, expected: np.ndarray
) -> list[bytes]:
    """The ``.tflite`` of each graph, after checking that TFLite Micro's outputs on the int8
    ``sample`` equal ``expected`` (the host reference) bit for bit."""
    from uqbench.deploy.tflite import run_tflite_micro, to_tflite

    models = [to_tflite(g) for g in model.graphs]
    tflm = np.concatenate([run_tflite_micro(m, sample) for m in models], 1)
    if not np.array_equal(tflm, expected):
        raise BitExactMismatch(
            first_difference("host int8 reference", "tflite-micro", expected, tflm)
        )
    return models


@dataclass
class Sources:
    """The C sources of a device model and its arena: ``planned`` bytes, ``lower_bound``."""

    files: dict[str, str]
    planned: int
    lower_bound: int


def sources(model: DeviceModel, with_score: bool = True) -> Sources:
    """The networks (one arena), the kernels and, ``with_score``, ``uq_score.c``."""
    from uqbench.deploy.codegen import ensemble, generate

    if len(model.graphs) == 1:
        files, plan = generate(model.graphs[0])
        planned, bound = plan.size, plan.lower_bound
    else:
        files, plans = ensemble(model.graphs)
        planned, bound = max(p.size for p in plans), max(p.lower_bound for p in plans)
    if with_score:
        files["uq_score.c"] = c_source(model.score, model.layout)
    return Sources(files, planned, bound)


def base_sources(method: Any, model: DeviceModel, calibration: list[torch.Tensor]) -> Sources:
    """BASE: the plain backbone, no tap outputs and no score, the same network for every
    method of a run, so a method's taps and their pooling, its other members or passes and its
    score all count as its extras."""
    from uqbench.deploy.convert import to_graph

    backbone = method.backbone.eval()
    if model.networks == [backbone] and not model.score.taps:
        graph = model.graphs[0]
    else:
        graph = to_graph(backbone, calibration)
    return sources(DeviceModel(model.export, [backbone], [graph], model.score), with_score=False)


def first_difference(a_name: str, b_name: str, a: np.ndarray, b: np.ndarray) -> str:
    where = np.argwhere(a != b)
    if len(where) == 0:
        return f"{a_name} and {b_name} have different shapes: {a.shape} vs {b.shape}"
    example, index = (int(v) for v in where[0])
    got, wanted = int(b[example, index]), int(a[example, index])
    return (
        f"{b_name} differs from {a_name}: example {example}, output byte {index}: {got} instead of "
        f"{wanted}; no latency is written for wrong firmware"
    )


FOLDABLE_BYTES = 64  # constants this small may be folded into the code by the compiler


def check_score_symbols(elf: Path, score: DeviceScore, layout: list[Output]) -> dict[str, Any]:
    """The declared scratch and constants against the firmware's symbols: ``uq_scratch`` holds
    exactly the declared floats and each constant ``uq_<name>`` its array's bytes (one of at most
    ``FOLDABLE_BYTES`` may be folded away by the compiler: listed). Raises when one differs."""
    from uqbench.deploy.firmware import symbol_sizes

    sizes = symbol_sizes(elf)
    declared = {f"uq_{n}": int(np.asarray(v).nbytes) for n, v in score.constants(layout).items()}
    scratch = 4 * scratch_buffer_floats(score, layout)
    if scratch:
        declared["uq_scratch"] = scratch
    # A small array the compiler folded into immediates is absent; a large absent one is a
    # constant the body never reads.
    wrong = {}
    for name, wanted in declared.items():
        built = sizes.get(name)
        folded = built is None and wanted <= FOLDABLE_BYTES and name != "uq_scratch"
        if built != wanted and not folded:
            wrong[name] = (wanted, built)
    if wrong:
        raise UQBenchError(
            f"the {score.kind} score's firmware does not match its declaration ({{symbol: "
            f"(declared bytes, built bytes)}}; None: not in the firmware): {wrong}"
        )
    present = {n: b for n, b in declared.items() if n in sizes}
    return {
        "scratch_bytes": scratch,
        "constants_bytes": sum(b for n, b in present.items() if n != "uq_scratch"),
        "constants_absent": sorted(n for n in declared if n not in sizes),
    }


def measure(
    model: DeviceModel,
    src: Sources,
    base: Sources,
    board: Any,
    folder: Path,
    sample: np.ndarray,
    expected: np.ndarray,
    macs: int,
) -> dict[str, Any]:
    """Build, run and profile the firmware of ``model`` for ``board`` in ``folder``: its
    outputs on the int8 ``sample`` must equal ``expected`` bit for bit (else
    :class:`BitExactMismatch`: no latency for wrong firmware) and its scores the host's within
    the score's tolerance. Costs are split against BASE (``base``, the plain backbone) and the
    extras by component: the networks' (tap outputs and their pooling, other members or
    passes) and the score's (code and libm, constants, scratch). A region overflow is an OOM
    result: ``{"fits": False, "oom": {region: bytes over}}``."""
    from uqbench.deploy.firmware import (
        STACK_BYTES,
        build,
        emulate,
        harness,
        harness_bytes,
    )
    from uqbench.deploy.kernels import by_layer, kernel_flash
    from uqbench.deploy.timing import MODEL, estimate, profile

    classes = model.layout[0].size
    rows = sample.reshape(len(sample), -1)
    with_score = build(
        {**src.files, "main.c": harness(rows, classes=classes)}, board, folder / "build"
    )
    if with_score.elf is None:
        return {"fits": False, "oom": with_score.oom}
    one = harness(rows[:1])
    bare = build({**base.files, "main.c": one}, board, folder / "build-backbone")
    networks_files = {k: v for k, v in src.files.items() if k != "uq_score.c"}
    networks = build({**networks_files, "main.c": one}, board, folder / "build-networks")
    emulation = emulate(with_score.elf, board, len(sample))
    if not np.array_equal(emulation.outputs, expected):
        raise BitExactMismatch(
            first_difference(
                "host int8 reference", f"firmware on {board.name}", expected, emulation.outputs
            )
        )
    _, host = model.host_scores(expected)
    declared = check_score_symbols(with_score.elf, model.score, model.layout)
    origin = board.memory.ram_origin

    def flash_and_static_ram(result) -> tuple[int, int]:
        """Flash and static RAM (data + bss, no stack reservation) without the harness."""
        h_flash, h_ram = harness_bytes(result.elf, origin)
        return result.flash_bytes - h_flash, result.ram_bytes - STACK_BYTES - h_ram

    total, static = flash_and_static_ram(with_score)
    base_flash, base_static = flash_and_static_ram(bare)
    net_flash, net_static = flash_and_static_ram(networks)
    base_run = emulate(bare.elf, board, 1)
    spent = emulation.instructions + emulation.score_instructions
    # Peak RAM in use: static data beside the arena, plus the stack's high-water mark instead
    # of its reservation.
    in_use, base_in_use = static + emulation.stack_bytes, base_static + base_run.stack_bytes
    timing = estimate(profile(with_score.elf, board.qemu_machine), board.core, with_score.elf)
    base_timing = estimate(profile(bare.elf, board.qemu_machine), board.core, bare.elf)
    ms = 1e3 * board.clock_mhz
    what = "other members or passes" if len(model.graphs) > 1 else "tap outputs and their pooling"
    return {
        "fits": True,
        "oom": {},
        "flash_bytes": {
            "total": total,
            "backbone": base_flash,  # BASE: the plain backbone
            "uncertainty_extras": total - base_flash,
            "kernels": kernel_flash(with_score.elf),  # part of the backbone's
            "excludes": "the emulation test harness (main and uqh_* symbols)",
        },
        "ram_bytes": {
            "static": with_score.ram_bytes,
            "arena": src.planned,
            "stack_high_water": emulation.stack_bytes,
            "peak": in_use,
            "backbone": base_in_use,
            "uncertainty_extras": in_use - base_in_use,
            "peak_is": "static data and bss (the arena included) + the stack's high-water "
            "mark, without the stack's reservation and the harness",
        },
        "instructions_per_inference": spent,
        "instructions": {
            "backbone": base_run.instructions,
            "uncertainty_extras": spent - base_run.instructions,
            "by_function": timing.by_function,
            "by_layer": by_layer(timing.by_function),
        },
        "extras_by_component": {
            "networks": {
                "what": what,
                "flash_bytes": net_flash - base_flash,
                "static_ram_bytes": net_static - base_static,
                "instructions": emulation.instructions - base_run.instructions,
            },
            "score": {
                "what": f"the {model.score.kind} score: code, libm, constants, scratch",
                "flash_bytes": total - net_flash,
                "constants_flash_bytes": declared["constants_bytes"],
                "static_ram_bytes": static - net_static,
                "scratch_ram_bytes": declared["scratch_bytes"],
                "instructions": emulation.score_instructions,
            },
            "stack_ram_bytes": emulation.stack_bytes - base_run.stack_bytes,
        },
        "instructions_per_mac": emulation.instructions / macs,
        "latency": {
            "estimated_cycles": round(timing.cycles),
            "estimated_ms": timing.cycles / ms,
            "backbone_ms": base_timing.cycles / ms,
            "uncertainty_extras_ms": (timing.cycles - base_timing.cycles) / ms,
            "cycles_per_mac": timing.cycles / macs,
            "emulated_estimate": True,
            "model": MODEL,
            "by_class": timing.by_class,
        },
        "checks": {
            "examples": len(sample),
            "firmware_logits_equal_host_reference": True,
            "host_reference_equals_tflite_micro": True,
            **model.score.agreement(emulation.scores, host),
            "score_declaration": declared,
        },
    }


CALIBRATION_EXAMPLES = 512
EMULATED_EXAMPLES = 8


def calibration_batches(dataset: Any, limit: int = CALIBRATION_EXAMPLES) -> list[torch.Tensor]:
    """The first batches of 128 inputs of ``dataset`` holding ``limit`` examples (the
    calibration set: its batching fixes the ranges' float sums)."""
    from torch.utils.data import DataLoader

    out, seen = [], 0
    for x, _ in DataLoader(dataset, batch_size=128):
        out.append(x)
        seen += len(x)
        if seen >= limit:
            break
    return out


def board_record(board: Any) -> dict[str, Any]:
    return {
        "name": board.name,
        "core": board.core,
        "clock_mhz": board.clock_mhz,
        "flash_kb": board.flash_kb,
        "ram_kb": board.ram_kb,
    }


def deploy(
    method: Any, datamodule: Any, boards: list[Any], root: Path, about: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Deploy a calibrated ``method`` (its data: ``datamodule``, set up) to ``boards``: one
    folder per board under ``root`` with ``deploy.json`` (``about`` first: what the run was),
    the ``.tflite`` models, the standalone project and the firmware. Returns each board's
    record. A folder is written under a private name and renamed when complete: an
    interrupted deploy leaves nothing that looks finished."""
    import os
    import shutil

    from uqbench.deploy.convert import NotDeployable
    from uqbench.deploy.project import write_project
    from uqbench.deploy.quality import compare

    from uqbench.backbones.base import count_macs
    from uqbench.run_folder import atomic_write_json

    def publish(board: Any, doc: dict[str, Any], fill: Any = None) -> dict[str, Any]:
        final = root / board.name
        folder = root / f".{board.name}.partial-{os.getpid()}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            if fill is not None:
                doc |= fill(folder)
            atomic_write_json(folder / "deploy.json", doc)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # no half-written folder stays behind
            raise
        shutil.rmtree(final, ignore_errors=True)
        os.replace(folder, final)
        return doc

    def not_deployable(reason: str) -> dict[str, dict[str, Any]]:
        """A clear line per board, not a crash: the method or its network has no device form."""
        return {
            b.name: publish(
                b, {"board": board_record(b), **about, "deployable": False, "reason": reason}
            )
            for b in boards
        }

    method.eval().cpu()
    export, reason = device_form(method)
    if export is None:
        return not_deployable(reason)
    calibration = calibration_batches(datamodule.dev_set)
    try:
        model = convert(method, export, calibration)
    except NotDeployable as exc:
        return not_deployable(f"backbone {about.get('backbone', '?')}: {exc}")
    quality = compare(method, datamodule, model)
    x_sample = next(iter(torch.utils.data.DataLoader(datamodule.test_set, EMULATED_EXAMPLES)))[0]
    sample = model.quantize(x_sample)
    expected = model.outputs(sample)
    tflite = verify_tflite_micro(model, sample, expected)
    src, base = sources(model), base_sources(method, model, calibration)
    shape = tuple(getattr(method.backbone, "input_shape", x_sample.shape[1:]))
    macs = sum(count_macs(n, torch.zeros(1, *shape)) for n in model.networks)
    documents = {}
    for board in boards:

        def fill(folder: Path, board: Any = board) -> dict[str, Any]:
            for k, blob in enumerate(tflite):
                name = "model.tflite" if len(tflite) == 1 else f"model_{k}.tflite"
                (folder / name).write_bytes(blob)
            write_project(folder / "project", src.files, board)
            return measure(model, src, base, board, folder, sample, expected, macs)

        doc = {
            "board": board_record(board),
            **about,
            "deployable": True,
            "export": export.to_dict(),
            "arena_bytes": {"planned": src.planned, "lower_bound": src.lower_bound},
            "macs": macs,
            # What the method declares it adds (its heads, its other members), in MACs.
            "uncertainty_extras_macs": int(method.cost_facts().extra_macs),
            "quantization": quality,
        }
        documents[board.name] = publish(board, doc, fill)
    return documents
