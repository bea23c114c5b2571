"""`uqbench deploy` on finished runs: firmware per board, deploy.json, OOM, refusals."""

from __future__ import annotations

import json
import shutil

import pytest

from uqbench.cli import main


class _Runs:
    """Run folders fitted on first use (one epoch on digits), shared by the module's tests."""

    def __init__(self, out):
        self.out = out

    EXTRA = {"deep_ensemble": ["method.members=3"]}
    VARIANTS = {
        "mc_dropout_head": ("mc_dropout", ["method.placement=head"]),
        "mahalanobis_mds": ("mahalanobis", ["method.variant=mds"]),
        "ash_maps": ("ash", ["method.on=maps", "method.mode=s", "method.percentile=65"]),
    }

    def __truediv__(self, name):
        if not (self.out / name).is_dir():
            method, extra = self.VARIANTS.get(name, (name, self.EXTRA.get(name, [])))
            code = main(
                [
                    "fit",
                    f"method={method}",
                    "trainer.max_epochs=1",
                    f"out={self.out}",
                    f"name={name}",
                    *extra,
                ]
            )
            assert code == 0
        return self.out / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _Runs(tmp_path_factory.mktemp("runs"))


def test_deploy_writes_checked_firmware_and_its_record(runs, capsys):
    code = main(["deploy", f"run={runs / 'msp'}", "board=small-mcu"])
    out = capsys.readouterr().out
    assert code == 0 and "small-mcu: flash" in out and "bit-exact on 8 examples" in out
    folder = runs / "msp" / "deploy" / "small-mcu"
    doc = json.loads((folder / "deploy.json").read_text())
    assert doc["deployable"] and doc["fits"] and doc["oom"] == {}
    assert doc["checks"]["firmware_logits_equal_host_reference"]
    assert doc["checks"]["host_reference_equals_tflite_micro"]
    assert doc["checks"]["score_within_tolerance"]
    flash = doc["flash_bytes"]
    assert flash["backbone"] + flash["uncertainty_extras"] == flash["total"] < 256 * 1024
    assert doc["arena_bytes"]["planned"] == doc["arena_bytes"]["lower_bound"]
    assert doc["ram_bytes"]["static"] >= doc["arena_bytes"]["planned"]
    assert doc["instructions"]["backbone"] > 1e6 and doc["instructions"]["uncertainty_extras"] > 0
    latency, ram = doc["latency"], doc["ram_bytes"]
    assert latency["emulated_estimate"] and "Not modelled" in latency["model"]
    assert latency["backbone_ms"] + latency["uncertainty_extras_ms"] == pytest.approx(
        latency["estimated_ms"]
    )
    assert latency["uncertainty_extras_ms"] > 0 and 1 < latency["cycles_per_mac"] < 30
    cycles = sum(c["cycles"] for c in latency["by_class"].values())
    assert latency["estimated_cycles"] == round(cycles)
    assert ram["backbone"] + ram["uncertainty_extras"] == ram["peak"] < ram["static"]
    assert ram["peak"] >= doc["arena_bytes"]["planned"] + ram["stack_high_water"]
    functions = doc["instructions"]["by_function"]
    assert "uq_conv2d" in functions and "uq_score" in functions
    layers = doc["instructions"]["by_layer"]
    assert max(layers, key=layers.get) == "conv" and sum(layers.values()) == sum(functions.values())
    assert 2000 < flash["kernels"] < flash["backbone"]
    q = doc["quantization"]
    assert q["examples"] == 360 and q["prediction_agreement"] > 0.8
    ood = q["auroc_id_ok_vs_ood"]["photos"]
    assert ood["examples"] == 360 and abs(ood["int8"] - ood["float"]) < 0.1
    assert abs(ood["auprc"]["int8"] - ood["auprc"]["float"]) < 0.1
    assert q["score_rank_agreement"] > 0.8 and ood["score_rank_agreement"] > 0.8
    # Every CID severity, pooled over digits' 8 corruptions (125 each, the first ones).
    assert sorted(q["cid"]) == ["1", "2", "3", "4", "5"]
    for severity in q["cid"].values():
        assert severity["examples"] == 1000 and severity["score_rank_agreement"] > 0.8
        assert abs(severity["accuracy"]["int8"] - severity["accuracy"]["float"]) < 0.05
        auroc = severity["auroc_id_vs_error"]
        assert abs(auroc["int8"] - auroc["float"]) < 0.05
    for name in ("model.c", "model.h", "uq_kernels.c", "uq_score.c", "Makefile", "README.md"):
        assert (folder / "project" / name).is_file()
    assert (folder / "model.tflite").read_bytes()[4:8] == b"TFL3"
    # Built under a private name, renamed when complete: nothing half-written is left.
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []


def test_a_board_too_small_is_an_oom_result(runs, capsys):
    code = main(["deploy", f"run={runs / 'msp'}", "board=big-mcu", "board.ram_kb=8"])
    out = capsys.readouterr().out
    assert code == 0 and "big-mcu: OOM (RAM by" in out
    doc = json.loads((runs / "msp" / "deploy" / "big-mcu" / "deploy.json").read_text())
    assert doc["fits"] is False and doc["oom"]["RAM"] > 0
    assert doc["board"]["ram_kb"] == 8 and "latency" not in doc


@pytest.mark.slow
def test_odin_is_recorded_as_not_deployable(runs, capsys):
    code = main(["deploy", f"run={runs / 'odin'}", "board=small-mcu"])
    out = capsys.readouterr().out
    assert code == 0 and "not deployable" in out and "gradient" in out
    doc = json.loads((runs / "odin" / "deploy" / "small-mcu" / "deploy.json").read_text())
    assert doc["deployable"] is False


@pytest.mark.parametrize(
    "args,message",
    [
        (["board=tiny-mcu"], "unknown board 'tiny-mcu'"),
        (["board=small-mcu", "board.ram_kb=x"], "board.ram_kb: expected int, got 'x'"),
        ([], "needs run=<run folder> and board=<names>"),
        (["board=small-mcu", "flash=1"], "is not key=value with a known key"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(runs, capsys, args, message):
    run_arg = [] if not args else [f"run={runs / 'msp'}"]
    before = sorted(p.name for p in (runs / "msp").iterdir())
    assert main(["deploy", *run_arg, *args]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in (runs / "msp").iterdir()) == before


def test_a_run_without_its_checkpoint_is_refused(runs, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(runs / "msp", broken, ignore=shutil.ignore_patterns("deploy"))
    (broken / "checkpoint.pt").unlink()
    assert main(["deploy", f"run={broken}", "board=small-mcu"]) == 2
    assert "checkpoint" in capsys.readouterr().err
    assert not (broken / "deploy").exists()


def test_a_checkpoint_from_another_version_is_refused_with_the_keys(runs, tmp_path, capsys):
    """A checkpoint whose parameters do not match the method as this version builds it (an
    older release's, an edited one) names what is missing and unexpected, and asks for a refit."""
    import torch

    other = tmp_path / "other"
    shutil.copytree(runs / "msp", other, ignore=shutil.ignore_patterns("deploy"))
    saved = torch.load(other / "checkpoint.pt", weights_only=True)
    state = saved["state_dict"]
    state["from_elsewhere"] = torch.zeros(1)
    del state[next(iter(state))]
    torch.save(saved, other / "checkpoint.pt")
    assert main(["deploy", f"run={other}", "board=small-mcu"]) == 2
    err = capsys.readouterr().err
    assert "another version" in err and "unexpected: from_elsewhere" in err and "Fit the run" in err
    assert not (other / "deploy").exists()


def test_a_missing_toolchain_names_the_packages(runs, capsys, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: None)
    assert main(["deploy", f"run={runs / 'msp'}", "board=small-mcu"]) == 2
    assert "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_deploys_at_the_end_and_reports_the_cost_table(tmp_path, capsys):
    code = main(
        [
            "fit",
            "method=msp",
            "trainer.max_epochs=1",
            f"out={tmp_path}",
            "name=f",
            "deploy=small-mcu",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "Deploy (int8, per board" in out
    assert "small-mcu" in out and "ms emulated (extras" in out
    assert (tmp_path / "f" / "deploy" / "small-mcu" / "deploy.json").is_file()


def test_fit_with_an_unknown_board_stops_before_training(tmp_path, capsys):
    code = main(["fit", "method=msp", f"out={tmp_path}", "deploy=small-mcu,huge-mcu"])
    assert code == 2 and "unknown board 'huge-mcu'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "method",
    [
        "mahalanobis",
        "mahalanobis_mds",
        "snapuq",
        "react",
        "ash",
        "mc_dropout_head",
        "early_exit",
        "evidential",
    ],
)
def test_tap_scored_methods_export_their_heads(runs, capsys, method):
    """Pooled taps leave the int8 graph beside the logits (bit-exact); the score's float32
    computation on the device equals the host's within the stated tolerance."""
    code = main(["deploy", f"run={runs / method}", "board=big-mcu"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((runs / method / "deploy" / "big-mcu" / "deploy.json").read_text())
    assert doc["export"]["kind"] == method  # the _head and _mds variants name their export
    assert doc["checks"]["firmware_logits_equal_host_reference"]
    assert doc["checks"]["score_within_tolerance"]
    assert doc["flash_bytes"]["uncertainty_extras"] > 500
    assert 0 < doc["instructions"]["uncertainty_extras"] < 0.05 * doc["instructions"]["backbone"]
    if method == "snapuq":  # int8 heads: a few tens of KB at most, ~2% MACs (paper section 3)
        assert doc["flash_bytes"]["uncertainty_extras"] < 32 * 1024
        assert 0 < doc["uncertainty_extras_macs"] < 0.02 * doc["macs"]


@pytest.mark.slow
def test_an_ensemble_runs_its_members_in_one_arena_and_can_run_out_of_flash(runs, capsys):
    code = main(["deploy", f"run={runs / 'deep_ensemble'}", "board=big-mcu"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((runs / "deep_ensemble" / "deploy" / "big-mcu" / "deploy.json").read_text())
    assert doc["export"]["kind"] == "ensemble" and doc["export"]["members"] == 3
    assert doc["export"]["what"] == "deep ensemble members"
    assert doc["export"]["score"]["params"] == {"mutual_information": False}
    flash, count = doc["flash_bytes"], doc["instructions"]
    assert 1.5 * flash["backbone"] < flash["uncertainty_extras"] < 2.5 * flash["backbone"]
    assert 1.8 * count["backbone"] < count["uncertainty_extras"] < 2.2 * count["backbone"]
    assert doc["ram_bytes"]["arena"] == doc["arena_bytes"]["lower_bound"]  # one shared arena
    assert doc["checks"]["firmware_logits_equal_host_reference"]
    code = main(["deploy", f"run={runs / 'deep_ensemble'}", "board=small-mcu", "board.flash_kb=64"])
    assert code == 0 and "small-mcu: OOM (FLASH by" in capsys.readouterr().out


def test_a_backbone_without_an_int8_form_is_a_clear_line_not_a_crash(runs, capsys, monkeypatch):
    from uqbench.deploy import convert

    def refuse(*args, **kwargs):
        raise convert.NotDeployable("the int8 export has no operator for aten.gelu.default")

    monkeypatch.setattr(convert, "to_graph", refuse)
    code = main(["deploy", f"run={runs / 'msp'}", "board=big-mcu"])
    out = capsys.readouterr().out
    assert code == 0 and "not deployable: backbone digits-cnn: the int8 export has no" in out


@pytest.mark.slow
def test_mc_dropout_at_the_taps_runs_its_passes_with_shared_weights(runs, capsys):
    """The default placement: N whole passes, each the int8 network with its pass's masks
    (regenerated on the device) before the next layer, the weights in flash once."""
    code = main(["deploy", f"run={runs / 'mc_dropout'}", "board=small-mcu"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((runs / "mc_dropout" / "deploy" / "small-mcu" / "deploy.json").read_text())
    fitted = json.loads((runs / "mc_dropout" / "metrics.json").read_text())
    passes = fitted["tuning"]["chosen"]["samples"]
    assert doc["export"]["kind"] == "ensemble" and doc["export"]["what"] == "MC dropout passes"
    assert doc["export"]["members"] == passes
    assert doc["checks"]["firmware_logits_equal_host_reference"]
    assert doc["checks"]["host_reference_equals_tflite_micro"]
    flash, count = doc["flash_bytes"], doc["instructions"]
    # The weights once: a pass adds its requantization constants and calls, far less than a
    # backbone (N - 1 more copies of the weights would add N - 1 backbones' flash).
    assert flash["uncertainty_extras"] < 0.25 * (passes - 1) * flash["backbone"]
    assert (passes - 1.2) * count["backbone"] < count["uncertainty_extras"]
    assert count["uncertainty_extras"] < passes * count["backbone"]  # N - 1 more, and the masks
    project = runs / "mc_dropout" / "deploy" / "small-mcu" / "project"
    assert "uq_mul_dropout(" in (project / "member_0.c").read_text()


def test_a_bit_exact_mismatch_stops_the_stage_and_writes_no_latency(runs, capsys, monkeypatch):
    from uqbench.deploy import firmware

    real = firmware.emulate

    def corrupted(*args, **kwargs):
        result = real(*args, **kwargs)
        result.outputs = result.outputs.copy()
        result.outputs[0, 3] ^= 1  # one bit of one logit
        return result

    monkeypatch.setattr(firmware, "emulate", corrupted)
    folder = runs / "msp" / "deploy" / "nucleo-l4r5zi"
    assert main(["deploy", f"run={runs / 'msp'}", "board=nucleo-l4r5zi"]) == 2
    err = capsys.readouterr().err
    assert (
        "firmware on nucleo-l4r5zi differs from host int8 reference: example 0, output byte 3"
        in err
    )
    assert not folder.exists()  # nothing complete-looking, no latency
    assert not any(p.name.startswith(".nucleo") for p in folder.parent.iterdir())  # no partial


def test_the_standalone_project_builds_with_its_makefile(runs, tmp_path):
    import subprocess

    assert main(["deploy", f"run={runs / 'msp'}", "board=small-mcu"]) == 0
    project = tmp_path / "project"
    shutil.copytree(runs / "msp" / "deploy" / "small-mcu" / "project", project)
    done = subprocess.run(["make"], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    symbols = subprocess.run(
        ["arm-none-eabi-nm", "libuqmodel.a"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert " T uq_infer" in symbols and " T uq_score" in symbols


@pytest.mark.slow
def test_base_is_the_same_plain_backbone_for_every_method(runs, capsys):
    """BASE is the backbone without taps or score, whatever the method: msp and mahalanobis
    (which reads the pooled penultimate tap) start from the same cached base classifier, so
    their BASE builds are the same program; the tap and its pooling are mahalanobis's extras."""
    docs = {}
    for method in ("msp", "mahalanobis"):
        code = main(["deploy", f"run={runs / method}", "board=small-mcu"])
        assert code == 0, capsys.readouterr().err
        docs[method] = json.loads((runs / method / "deploy/small-mcu/deploy.json").read_text())
    msp, maha = docs["msp"], docs["mahalanobis"]
    assert msp["instructions"]["backbone"] == maha["instructions"]["backbone"]
    assert msp["flash_bytes"]["backbone"] == maha["flash_bytes"]["backbone"]
    assert msp["ram_bytes"]["backbone"] == maha["ram_bytes"]["backbone"]
    assert msp["latency"]["backbone_ms"] == maha["latency"]["backbone_ms"]
    assert maha["instructions"]["uncertainty_extras"] > msp["instructions"]["uncertainty_extras"]
    # The extras by component: msp adds no network work, only its score; mahalanobis's graph
    # adds its two taps' pooling, and its score's constants are its means and variances.
    for doc in (msp, maha):
        parts = doc["extras_by_component"]
        flash = parts["networks"]["flash_bytes"] + parts["score"]["flash_bytes"]
        assert flash == doc["flash_bytes"]["uncertainty_extras"]
        instructions = parts["networks"]["instructions"] + parts["score"]["instructions"]
        assert instructions == doc["instructions"]["uncertainty_extras"]
    assert msp["extras_by_component"]["networks"]["instructions"] == 0
    assert msp["extras_by_component"]["networks"]["flash_bytes"] == 0
    assert msp["extras_by_component"]["score"]["constants_flash_bytes"] == 0
    assert maha["extras_by_component"]["networks"]["instructions"] > 0
    declared = maha["checks"]["score_declaration"]
    shapes = maha["export"]["constants"]
    means = sum(4 * s[0] * s[1] for n, s in shapes.items() if n.startswith("means_"))
    assert declared["constants_bytes"] >= means  # the class means at least, in float32
    assert (
        maha["extras_by_component"]["score"]["constants_flash_bytes"] == declared["constants_bytes"]
    )
    assert maha["extras_by_component"]["score"]["scratch_ram_bytes"] == 4 * (
        10 + sum(s[0] for n, s in shapes.items() if n.startswith("variance_"))
    )  # the dequantized logits and taps
