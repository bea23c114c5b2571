"""The W&B sweep files in sweeps/: valid for W&B (the sweeps package, the controller's own
library), every run resolvable by uqbench fit, expanded into the commands wandb agent would
run (wandb's helpers), and run offline: the sweep's metric is logged under its name."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from uqbench import sweeps
from uqbench.cli import main
from uqbench.errors import ConfigError

FILES = sorted((Path(__file__).parents[1] / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_sweep_file_is_valid_and_expands(path):
    config = sweeps.load(path)
    sweeps.check(config, str(path))
    runs = sweeps.runs(config)
    expected = {"methods-by-seed.yaml": 18, "snapuq-ablation.yaml": 36, "snapuq-bayes.yaml": 3}
    assert len(runs) == expected[path.name]
    for params in runs:
        command = sweeps.command_line(config, params)
        assert command[:3] == ["/usr/bin/env", "uqbench", "fit"]
        assert command[3:] == [f"{k}={v}" for k, v in params.items()]
    if config["method"] == "bayes":
        for params in runs:
            for name, bounds in config["parameters"].items():
                if "min" in bounds:
                    assert bounds["min"] <= params[name] <= bounds["max"]
    else:
        assert len({tuple(sorted(p.items())) for p in runs}) == len(runs)  # each point once


@pytest.mark.parametrize(
    "change, message",
    [
        (("parameters", "method.rnk", {"values": [8, 16]}), "rnk"),
        (("parameters", "optimiser", {"value": "sgd"}), "unknown key 'optimiser'"),
        (("metric", "name", "dev/id_vs_error/aurox"), "metric 'dev/id_vs_error/aurox'"),
        (("metric", "name", "dev/id_vs_ood/mean/auroc"), "not a dev metric"),
        (("metric", "name", "final/id_vs_error/auroc"), "is a test metric.*dev/id_vs_error/auroc"),
        (("command", None, ["${env}", "python", "train.py", "${args}"]), "command must be"),
    ],
)
def test_an_unknown_parameter_or_metric_is_named(change, message):
    config = sweeps.load(FILES[0])
    section, key, value = change
    if key is None:
        config[section] = value
    else:
        config[section][key] = value
    with pytest.raises(ConfigError, match=message):
        sweeps.check(config)


def test_uqbench_sweep_prints_the_agents_commands(capsys, tmp_path):
    assert main(["sweep", str(FILES[0]), "count=2"]) == 0
    out, err = capsys.readouterr()
    header, *lines = out.splitlines()
    assert header.startswith("# grid sweep, search space: ") and "2 run(s) below" in header
    assert lines == [
        "/usr/bin/env uqbench fit data=digits logger=wandb method=msp seed=13",
        "/usr/bin/env uqbench fit data=digits logger=wandb method=msp seed=17",
    ]
    assert "Warning" not in err and "warn" not in err  # no third-party warnings
    broken = tmp_path / "broken.yaml"
    broken.write_text(FILES[0].read_text().replace("dev/id_vs_error/auroc", "dev/nope"))
    assert main(["sweep", str(broken)]) == 2
    assert "dev/nope" in capsys.readouterr().err
    on_test = tmp_path / "on-test.yaml"
    on_test.write_text(
        FILES[0].read_text().replace("dev/id_vs_error/auroc", "final/id_vs_error/auroc")
    )
    assert main(["sweep", str(on_test)]) == 2
    assert "tunes on the test set" in capsys.readouterr().err


def test_every_sweep_file_optimizes_a_dev_metric():
    for path in FILES:
        assert sweeps.load(path)["metric"]["name"].startswith("dev/"), path


def _logged_keys(run_file: Path) -> set[str]:
    """Metric names in a W&B offline run file (.wandb): records in 32 KiB blocks after a
    7-byte header, each with a 4-byte checksum, 2-byte length and 1-byte type (full, first,
    middle, last), holding wandb's Record protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, block, pending, keys = run_file.read_bytes(), 7, 32768, b"", set()
    while pos + 7 <= len(raw):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pending = data if kind in (1, 2) else pending + data
        if kind not in (1, 4):
            continue
        record = pb.Record()
        record.ParseFromString(pending)
        items = {"history": lambda r: r.history.item, "summary": lambda r: r.summary.update}
        getter = items.get(record.WhichOneof("record_type"))
        keys |= {i.key or "/".join(i.nested_key) for i in getter(record)} if getter else set()
    return keys


@pytest.mark.slow
def test_the_first_run_of_a_sweep_logs_its_metric_offline(tmp_path):
    config = sweeps.load(FILES[0])
    params = sweeps.runs(config, count=1)[0]
    command = sweeps.command_line(config, params) + [
        "trainer.max_epochs=1",
        f"out={tmp_path}",
        "name=run",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    assert config["metric"]["name"] in _logged_keys(run_file)


def test_the_search_space_is_counted():
    from uqbench.sweeps import space

    grid = {
        "parameters": {
            "method": {"value": "snapuq"},
            "method.rank": {"values": [16, 32, 64]},
            "seed": {"values": [13, 17]},
        }
    }
    assert space(grid) == "search space: 6 points (method.rank 3 x seed 2)"
    search = {
        "parameters": {
            "method.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
            "seed": {"values": [13, 17]},
            "method.rank": {"distribution": "int_uniform", "min": 8, "max": 11},
        }
    }
    assert space(search) == (
        "search space: continuous in method.lr, times 8 discrete points (seed 2 x method.rank 4)"
    )
