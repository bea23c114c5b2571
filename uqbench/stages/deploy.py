"""The deploy stage: a finished run as int8 firmware per board, checked and measured.

For a run folder and boards it writes ``deploy/<board>/`` inside the run folder:

- ``model.tflite``: the backbone as a standard int8 TFLite model;
- ``project/``: the standalone C project (``model.c``/``model.h``, the kernels, ``uq_score.c``,
  a ``Makefile`` and a ``README.md``) a user builds for a real board;
- ``firmware.elf``: the emulation firmware (the project plus a test harness);
- ``deploy.json``: sizes, OOM, instructions, MACs, the latency estimate and its model, the
  bit-exact checks, int8 against float accuracy and failure-detection AUROC.

Steps: rebuild the run (its checkpoint loaded with ``weights_only=True``); ask the method for
its device export (a method without one is recorded as not deployable, with its reason);
calibrate activation ranges on the dev split; convert; check the host int8 reference against
tflite-micro; generate C; build per board (a region overflow is an OOM result); run the firmware
under QEMU on the first test examples and require its logits to equal the host reference bit for
bit (a mismatch stops the stage, naming the first differing output, and no latency is written).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from uqbench.errors import UQBenchError

CALIBRATION_EXAMPLES = 512
EMULATED_EXAMPLES = 8
OOD_EXAMPLES = 2000  # per OOD set, for the int8 vs float comparison
CID_EXAMPLES = 1000  # per severity, pooled over the corruptions, for the same comparison
SCORE_TOLERANCE = 1e-5  # relative: newlib's expf/logf against NumPy's
TAP_SCORE_TOLERANCE = 1e-4  # relative: long float32 sums in another order than NumPy's


class BitExactMismatch(UQBenchError):
    pass


def _batches(dataset, limit: int) -> list[torch.Tensor]:
    """The first batches of 128 inputs of ``dataset`` holding ``limit`` examples (the
    calibration set: its batching fixes the ranges' float sums)."""
    out, seen = [], 0
    for x, _ in DataLoader(dataset, batch_size=128):
        out.append(x)
        seen += len(x)
        if seen >= limit:
            break
    return out


def _auroc(scores: np.ndarray, errors: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if errors.all() or not errors.any():
        return None  # one class only: undefined
    return float(roc_auc_score(errors, scores))


def _auprc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    if positives.all() or not positives.any():
        return None
    return float(average_precision_score(positives, scores))


def _rank_agreement(float_score: np.ndarray, int8_score: np.ndarray) -> float | None:
    """Spearman's rank correlation of the int8 score with the float score (1: same order)."""
    from scipy.stats import spearmanr

    if len(float_score) < 2 or np.ptp(float_score) == 0 or np.ptp(int8_score) == 0:
        return None
    return float(spearmanr(float_score, int8_score).statistic)


def _first(dataset, limit: int) -> tuple[torch.Tensor, np.ndarray]:
    """The first ``limit`` examples of ``dataset`` and their labels."""
    xs, ys, seen = [], [], 0
    for x, y in DataLoader(dataset, batch_size=256):
        xs.append(x)
        ys.append(np.asarray(y))
        seen += len(x)
        if seen >= limit:
            break
    return torch.cat(xs)[:limit], np.concatenate(ys)[:limit]


def deploy_run(run: Path, boards: list[Any]) -> dict[str, Any]:
    """Deploy the run at ``run`` to ``boards`` (:class:`~uqbench.deploy.boards.Board`); returns
    ``{board name: its deploy.json}``."""
    from uqbench.backbones.base import count_macs
    from uqbench.deploy.codegen import ensemble, generate
    from uqbench.deploy.convert import NotDeployable, quantize_input, to_graph
    from uqbench.deploy.firmware import STACK_BYTES, build, check_toolchain, emulate, harness
    from uqbench.deploy.kernels import by_layer, kernel_flash
    from uqbench.deploy.reference import run as run_int8
    from uqbench.deploy.score import (
        Ensemble,
        LogitScore,
        bind_input_scales,
        c_source,
        host_score,
        host_tap_score,
        tap_c_source,
    )
    from uqbench.deploy.tflite import run_tflite_micro, to_tflite
    from uqbench.deploy.timing import MODEL, estimate, profile
    from uqbench.run_folder import atomic_write_json
    from uqbench.stages.rebuild import load_run

    check_toolchain()
    resolved, method, datamodule, _ = load_run(run)
    method.eval().cpu()
    export = method.device_export()
    root = run / "deploy"

    def not_deployable(reason: str) -> dict[str, Any]:
        """A clear line per board, not a crash: the method or its backbone has no device form."""
        documents = {}
        for board in boards:
            doc = {"board": _board_dict(board), "deployable": False, "reason": reason}
            _write(root / board.name, doc, atomic_write_json)
            documents[board.name] = doc
        return documents

    if export is None:
        return not_deployable(method.device_export_reason())
    backbone = method.backbone.eval()
    # The networks on the device (an ensemble's members, else the backbone) and the score.
    members = list(export.members) if isinstance(export, Ensemble) else [backbone]
    scorer = export.score() if isinstance(export, Ensemble) else export
    taps = () if isinstance(scorer, LogitScore) else scorer.taps
    calibration = _batches(datamodule.dev_set, CALIBRATION_EXAMPLES)
    try:
        graphs = [to_graph(m.eval(), calibration, taps) for m in members]
    except NotDeployable as exc:
        return not_deployable(f"backbone {resolved.backbone}: {exc}")
    graph = graphs[0]
    outputs = [(g, n) for g in graphs for n in g.outputs]
    sizes = [int(np.prod(g.tensors[n].shape)) for g, n in outputs]
    quant = [
        (float(g.tensors[n].qparams.scale[0]), int(g.tensors[n].qparams.zero_point[0]))
        for g, n in outputs
    ]
    if not isinstance(scorer, LogitScore):
        scorer = bind_input_scales(scorer, quant)

    def device_scores(outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probs, score) from concatenated int8 outputs, as the device computes them."""
        if isinstance(scorer, LogitScore):
            return host_score(outputs[:, : sizes[0]], *quant[0], scorer)
        return host_tap_score(outputs, sizes, quant, scorer)

    def run_all(q: np.ndarray) -> np.ndarray:
        """Every network's outputs on int8 inputs ``q``, concatenated (the device's layout)."""
        parts = []
        for g in graphs:
            values = run_int8(g, q)
            parts += [values[n].reshape(len(q), -1) for n in g.outputs]
        return np.concatenate(parts, 1)

    # The ID test set through both paths: accuracy and failure detection, int8 vs float.
    xs, ys = zip(*[(x, y) for x, y in DataLoader(datamodule.test_set, batch_size=256)], strict=True)
    x_test, y_test = torch.cat(xs), torch.cat(ys).numpy()
    q_test = quantize_input(graph, x_test)  # every member calibrated on the same inputs
    int8_outputs = run_all(q_test)
    int8_probs, int8_score = device_scores(int8_outputs)
    with torch.no_grad():
        out = method(x_test)
    float_pred, float_score = out.probs.argmax(1).numpy(), out.score.double().numpy()
    quality = {
        "examples": int(len(y_test)),
        "set": "id (the test split)",
        "accuracy": {
            "float": float((float_pred == y_test).mean()),
            "int8": float((int8_probs.argmax(1) == y_test).mean()),
        },  # fmt: skip
        "auroc_id_vs_error": {
            "float": _auroc(float_score, float_pred != y_test),
            "int8": _auroc(int8_score.astype(np.float64), int8_probs.argmax(1) != y_test),
        },
        "auprc_id_vs_error": {
            "float": _auprc(float_score, float_pred != y_test),
            "int8": _auprc(int8_score.astype(np.float64), int8_probs.argmax(1) != y_test),
        },
        "prediction_agreement": float((int8_probs.argmax(1) == float_pred).mean()),
        "auroc_id_ok_vs_ood": {},
    }
    # Each OOD set (its first OOD_EXAMPLES): correct ID examples against it, both paths.
    ok_float, ok_int8 = float_pred == y_test, int8_probs.argmax(1) == y_test
    for name in datamodule.ood_names:
        dataset = datamodule.ood_set(name)
        x_ood, _ = _first(dataset, OOD_EXAMPLES)
        _, ood_int8 = device_scores(run_all(quantize_input(graph, x_ood)))
        with torch.no_grad():
            ood_float = method(x_ood).score.double().numpy()
        positives = np.r_[np.zeros(ok_float.sum()), np.ones(len(ood_float))]
        positives_int8 = np.r_[np.zeros(ok_int8.sum()), np.ones(len(ood_int8))]
        float_both = np.r_[float_score[ok_float], ood_float]
        int8_both = np.r_[int8_score[ok_int8].astype(np.float64), ood_int8]
        quality["auroc_id_ok_vs_ood"][name] = {
            "examples": int(len(x_ood)),
            "float": _auroc(float_both, positives),
            "int8": _auroc(int8_both, positives_int8),
            "auprc": {
                "float": _auprc(float_both, positives),
                "int8": _auprc(int8_both, positives_int8),
            },
            "score_rank_agreement": _rank_agreement(ood_float, ood_int8),
        }
    quality["score_rank_agreement"] = _rank_agreement(float_score, int8_score)
    # Each CID severity, pooled over the corruptions (up to CID_EXAMPLES, the same number of
    # each corruption's first examples): what quantization does to failure detection under shift.
    quality["cid"] = {}
    corruptions = tuple(datamodule.corruptions)
    for severity in datamodule.severities if corruptions else ():
        per = -(-CID_EXAMPLES // len(corruptions))
        parts = [_first(datamodule.cid_set(c, severity), per) for c in corruptions]
        x_cid = torch.cat([x for x, _ in parts])
        y_cid = np.concatenate([y for _, y in parts])
        probs_cid, score_cid = device_scores(run_all(quantize_input(graph, x_cid)))
        with torch.no_grad():
            out_cid = method(x_cid)
        pred_f, score_f = out_cid.probs.argmax(1).numpy(), out_cid.score.double().numpy()
        pred_q, score_q = probs_cid.argmax(1), score_cid.astype(np.float64)
        quality["cid"][str(severity)] = {
            "examples": int(len(y_cid)),
            "accuracy": {
                "float": float((pred_f == y_cid).mean()),
                "int8": float((pred_q == y_cid).mean()),
            },
            "auroc_id_vs_error": {
                "float": _auroc(score_f, pred_f != y_cid),
                "int8": _auroc(score_q, pred_q != y_cid),
            },
            "auprc_id_vs_error": {
                "float": _auprc(score_f, pred_f != y_cid),
                "int8": _auprc(score_q, pred_q != y_cid),
            },
            "score_rank_agreement": _rank_agreement(score_f, score_q),
        }
    # The host reference against TFLite Micro on the emulated examples.
    sample = q_test[:EMULATED_EXAMPLES]
    expected = int8_outputs[: len(sample)]
    models = [to_tflite(g) for g in graphs]
    tflm = np.concatenate([run_tflite_micro(m, sample) for m in models], 1)
    if not np.array_equal(tflm, expected):
        raise BitExactMismatch(
            _first_difference("host int8 reference", "tflite-micro", expected, tflm)
        )
    # BASE: the plain backbone, no tap outputs and no score, the same network for every method
    # of a run, so a method's taps and their pooling, its other members or passes and its
    # score all count as its extras (MC dropout's passes carry masks, an ensemble's first
    # member is another network, a tap method's graph outputs its taps: each converts the
    # plain backbone on its own).
    base_graph = graph if members[0] is backbone and not taps else to_graph(backbone, calibration)
    base_files, base_plan = generate(base_graph)
    if len(graphs) == 1:
        files, plan = (base_files, base_plan) if base_graph is graph else generate(graph)
        arena, bound = plan.size, plan.lower_bound
    else:
        files, plans = ensemble(graphs)
        arena, bound = max(p.size for p in plans), max(p.lower_bound for p in plans)
    files["uq_score.c"] = (
        c_source(scorer, sizes[0], *quant[0])
        if isinstance(scorer, LogitScore)
        else tap_c_source(scorer, sizes, quant)
    )

    shape = tuple(getattr(backbone, "input_shape", x_test.shape[1:]))
    macs = sum(count_macs(m, torch.zeros(1, *shape)) for m in members)
    _, host_scores = device_scores(expected)
    tolerance = SCORE_TOLERANCE if isinstance(scorer, LogitScore) else TAP_SCORE_TOLERANCE
    documents = {}
    for board in boards:
        # Written under a private name and renamed when complete: an interrupted deploy leaves
        # nothing that looks finished, and two deploys of one run never share a folder.
        final = root / board.name
        folder = root / f".{board.name}.partial-{os.getpid()}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            for k, model in enumerate(models):
                name = "model.tflite" if len(models) == 1 else f"model_{k}.tflite"
                (folder / name).write_bytes(model)
            _project(folder / "project", files, board)
            main_c = harness(sample.reshape(len(sample), -1), classes=sizes[0])
            with_score = build({**files, "main.c": main_c}, board, folder / "build")
            # BASE (see above): what the method adds is measured against it.
            bare = build({**base_files, "main.c": harness(sample[:1].reshape(1, -1))},
                         board, folder / "build-backbone")  # fmt: skip
            doc: dict[str, Any] = {
                "board": _board_dict(board),
                "deployable": True,
                "method": resolved.config.method,
                "export": export.to_dict(),
                "arena_bytes": {"planned": arena, "lower_bound": bound},
                "macs": macs,
                # What the method declares it adds (its heads, its other members), in MACs.
                "uncertainty_extras_macs": int(method.cost_facts().extra_macs),
                "quantization": quality,
            }
            if with_score.elf is None:
                doc["oom"] = with_score.oom
                doc["fits"] = False
            else:
                emulation = emulate(with_score.elf, board, len(sample))
                if not np.array_equal(emulation.outputs, expected):
                    raise BitExactMismatch(
                        _first_difference(
                            "host int8 reference",
                            f"firmware on {board.name}",
                            expected,
                            emulation.outputs,
                        )  # fmt: skip
                    )
                relative = np.abs(emulation.scores - host_scores) / np.maximum(
                    np.abs(host_scores), 1e-6
                )
                origin = board.memory.ram_origin
                flash, harness_ram = _harness_bytes(with_score.elf, origin)
                total = with_score.flash_bytes - flash
                backbone_flash = bare.flash_bytes - _harness_bytes(bare.elf, origin)[0]
                base = emulate(bare.elf, board, 1)
                spent = emulation.instructions + emulation.score_instructions
                # Peak RAM in use: static data beside the arena, plus the stack's high-water
                # mark instead of its reservation; the harness's own buffers left out.
                in_use = with_score.ram_bytes - STACK_BYTES - harness_ram + emulation.stack_bytes
                base_in_use = (
                    bare.ram_bytes
                    - STACK_BYTES
                    - _harness_bytes(bare.elf, origin)[1]
                    + base.stack_bytes
                )
                timing = estimate(profile(with_score.elf, board.qemu_machine), board.core,
                                  with_score.elf)  # fmt: skip
                base_timing = estimate(profile(bare.elf, board.qemu_machine), board.core, bare.elf)
                ms = 1e3 * board.clock_mhz
                doc |= {
                    "fits": True,
                    "oom": {},
                    "flash_bytes": {
                        "total": total,
                        "backbone": backbone_flash,  # BASE: one backbone (the first member)
                        "uncertainty_extras": total - backbone_flash,
                        "kernels": kernel_flash(with_score.elf),  # part of the backbone's
                        "excludes": "the emulation test harness (main and uqh_* symbols)",
                    },
                    "ram_bytes": {
                        "static": with_score.ram_bytes,
                        "arena": arena,
                        "stack_high_water": emulation.stack_bytes,
                        "peak": in_use,
                        "backbone": base_in_use,
                        "uncertainty_extras": in_use - base_in_use,
                        "peak_is": "static data and bss (the arena included) + the stack's "
                        "high-water mark, without the stack's reservation and the harness",
                    },
                    "instructions_per_inference": spent,
                    "instructions": {
                        "backbone": base.instructions,
                        "uncertainty_extras": spent - base.instructions,
                        "by_function": timing.by_function,
                        "by_layer": by_layer(timing.by_function),
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
                        "score_max_relative_difference": float(relative.max()),
                        "score_tolerance": tolerance,
                        "score_within_tolerance": bool(relative.max() <= tolerance),
                    },
                }
            _write(folder, doc, atomic_write_json)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # no half-written folder stays behind
            raise
        shutil.rmtree(final, ignore_errors=True)
        os.replace(folder, final)
        documents[board.name] = doc
    return documents


def _board_dict(board: Any) -> dict[str, Any]:
    return {"name": board.name, "core": board.core, "clock_mhz": board.clock_mhz,
            "flash_kb": board.flash_kb, "ram_kb": board.ram_kb}  # fmt: skip


def _write(folder: Path, doc: dict[str, Any], atomic_write_json: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "deploy.json", doc)


def _first_difference(a_name: str, b_name: str, a: np.ndarray, b: np.ndarray) -> str:
    where = np.argwhere(a != b)
    if len(where) == 0:
        return f"{a_name} and {b_name} have different shapes: {a.shape} vs {b.shape}"
    example, index = (int(v) for v in where[0])
    got, wanted = int(b[example, index]), int(a[example, index])
    return (
        f"{b_name} differs from {a_name}: example {example}, output byte {index}: {got} instead of "
        f"{wanted}; no latency is written for wrong firmware"
    )


def _harness_bytes(elf: Path, ram_origin: int) -> tuple[int, int]:
    """(flash, RAM) bytes of the test harness (``main`` and ``uqh_*`` symbols) in ``elf``;
    RAM is at ``ram_origin`` and above."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    flash = ram = 0
    with open(elf, "rb") as handle:
        for section in ELFFile(handle).iter_sections():
            if isinstance(section, SymbolTableSection):
                for symbol in section.iter_symbols():
                    if symbol.name == "main" or symbol.name.startswith("uqh_"):
                        if symbol["st_value"] >= ram_origin:
                            ram += symbol["st_size"]
                        else:
                            flash += symbol["st_size"]
    return flash, ram


def _project(folder: Path, files: dict[str, str], board: Any) -> None:
    """The standalone C project: the model, the kernels, the score, a Makefile, a README."""
    from uqbench.deploy.firmware import linker_script

    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    flags = " ".join(board.cflags)
    (folder / "Makefile").write_text(
        f"# Builds the uqbench model as a static library for {board.name} ({board.core}).\n"
        f"CC = arm-none-eabi-gcc\nCFLAGS = {flags} -O3 -ffunction-sections -fdata-sections\n"
        "OBJECTS = $(patsubst %.c,%.o,$(wildcard *.c))\n\n"
        "libuqmodel.a: $(OBJECTS)\n\tarm-none-eabi-ar rcs $@ $^\n\n"
        "%.o: %.c\n\t$(CC) $(CFLAGS) -c $< -o $@\n\n"
        "clean:\n\trm -f $(OBJECTS) libuqmodel.a\n"
    )
    (folder / "link-example.ld").write_text(linker_script(board))
    (folder / "README.md").write_text(
        f"""# uqbench model for {board.name}

Files: `model.c` / `model.h` (the int8 network: weights in flash, one static arena),
`uq_kernels.c` / `uq_kernels.h` (int8 kernels, TFLite Micro arithmetic), `uq_kernels_dsp.c`
(the same kernels for cores with the DSP extension, chosen at compile time by
`__ARM_FEATURE_DSP`; `-DUQ_REFERENCE_KERNELS` keeps the portable ones, and `model.c` carries
the weight layout each expects), `uq_score.c` (the uncertainty score from the logits, float32).

Entry points:

```c
void uq_infer(const int8_t *input, int8_t *logits);   /* input: int8 NHWC, UQ_INPUT_BYTES */
float uq_score(const int8_t *logits, float *probs);   /* probs: UQ_OUTPUT_BYTES floats */
```

Quantize the input as the run's datamodule normalizes it, then with the input scale and zero
point in `model.tflite`. `make` builds `libuqmodel.a` with `arm-none-eabi-gcc`; link it into
your firmware (`link-example.ld` shows this board's memory sizes) with `-lm`.

Timing on silicon: enable the DWT cycle counter (`CoreDebug->DEMCR |= TRCENA;
DWT->CYCCNT = 0; DWT->CTRL |= 1;`), read `DWT->CYCCNT` before and after `uq_infer` and
`uq_score`. The latency in `deploy.json` is an emulated estimate, not a measurement.
"""
    )
