"""Nothing lost under faults: run folders, loggers and benches (real processes where needed)."""

import json
import os
import subprocess
import sys
import time

import pytest

from uqbench.cli import main
from uqbench.errors import RunDirError
from uqbench.run_folder import OWNER, RunFolder, clean_stale

FAST = ["method=msp", "trainer.max_epochs=1"]


def _dead_pid() -> int:
    command = [sys.executable, "-c", "import os; print(os.getpid())"]
    done = subprocess.run(command, capture_output=True, text=True)
    return int(done.stdout)


def test_a_users_partial_folder_is_never_removed(tmp_path, capsys):
    notes = tmp_path / "notes.partial"
    notes.mkdir()
    (notes / "my.txt").write_text("x")
    old = time.time() - 2 * 3600
    os.utime(notes, (old, old))
    assert clean_stale(tmp_path) == []
    code = main(["fit", f"out={tmp_path}", *FAST])
    assert code == 0, capsys.readouterr().err
    assert (notes / "my.txt").read_text() == "x"
    # Taking its name is refused with the reason, and the folder is still untouched.
    with pytest.raises(RunDirError, match="no owner record.*never removes it"):
        RunFolder.create(tmp_path, "notes")
    assert (notes / "my.txt").read_text() == "x"


def test_an_empty_user_folder_of_a_run_name_is_not_replaced(tmp_path):
    (tmp_path / "run.partial").mkdir()
    with pytest.raises(RunDirError, match="no owner record"):
        RunFolder.create(tmp_path, "run")
    assert (tmp_path / "run.partial").is_dir() and not list(tmp_path.glob(".*"))


def test_a_dead_runs_scratch_folders_are_cleaned_and_nothing_else(tmp_path):
    import socket

    pid = _dead_pid()
    scratch = tmp_path / f".run.partial@{socket.gethostname()}@{pid}"
    scratch.mkdir()  # killed between creating its scratch folder and writing the owner record
    trash = tmp_path / f"old.partial.stale-{pid}"
    (trash / "sub").mkdir(parents=True)  # killed while removing a stale folder
    live = tmp_path / f".other.partial@{socket.gethostname()}@{os.getpid()}"
    live.mkdir()
    elsewhere = tmp_path / f".x.partial@another-host@{pid}"
    elsewhere.mkdir()
    assert set(clean_stale(tmp_path)) == {scratch, trash}
    assert live.is_dir() and elsewhere.is_dir()


def test_a_commit_onto_a_taken_name_keeps_the_results_where_it_says(tmp_path, capsys):
    folder = RunFolder.create(tmp_path, "r")
    (folder.path / "metrics.json").write_text("{}")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "theirs.txt").write_text("x")
    with pytest.raises(RunDirError, match="complete results are kept in") as raised:
        folder.commit()
    kept = tmp_path / "r.partial"
    assert str(kept) in str(raised.value) and (kept / "metrics.json").is_file()
    assert not (kept / OWNER).exists()  # no cleaner will ever take it
    assert clean_stale(tmp_path) == [] and (kept / "metrics.json").is_file()


def test_a_fit_whose_name_is_taken_meanwhile_keeps_its_results(tmp_path, capsys, monkeypatch):
    from uqbench import runner

    real = runner._write_all

    def take_the_name(*args, **kwargs):
        results = real(*args, **kwargs)
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "x").write_text("another run's")
        return results

    monkeypatch.setattr(runner, "_write_all", take_the_name)
    code = main(["fit", f"out={tmp_path}", "name=r", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and f"kept in {tmp_path / 'r.partial'}" in err
    assert json.loads((tmp_path / "r.partial" / "metrics.json").read_text())["method"] == "msp"


def test_wandb_with_a_key_and_no_server_logs_offline_and_keeps_the_run(
    capsys, tmp_path, monkeypatch
):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    code = main(["fit", f"out={tmp_path}", "name=w", "logger=wandb", *FAST])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"127.0.0.1:{port} cannot be reached" in err and "wandb sync" in err
    assert (tmp_path / "w" / "metrics.json").is_file()
    assert list((tmp_path / "w" / "wandb").glob("offline-run-*"))


def test_a_logger_failing_at_close_never_loses_the_run(capsys, tmp_path, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger

    real = CSVLogger.log_metrics

    def fail_on_the_final_metrics(self, metrics, step=None):
        if any(key.startswith("final/") for key in metrics):
            raise ConnectionError("server gone")
        return real(self, metrics, step)

    monkeypatch.setattr(CSVLogger, "log_metrics", fail_on_the_final_metrics)
    code = main(["fit", f"out={tmp_path}", "name=c", *FAST])
    err = capsys.readouterr().err
    assert code == 0 and "csv logger failed while closing (ConnectionError: server gone)" in err
    assert (tmp_path / "c" / "metrics.json").is_file()


def test_every_file_a_run_writes_has_the_umasks_permissions(tmp_path, capsys):
    import stat

    previous = os.umask(0o022)
    try:
        code = main(["fit", f"out={tmp_path}", "name=p", *FAST])
        assert code == 0, capsys.readouterr().err
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "p").iterdir()}
        files = ["config.json", "metrics.json", "scores.npz", "checkpoint.pt"]
        assert {name: modes[name] for name in files} == dict.fromkeys(files, 0o644)
        os.umask(0o077)
        from uqbench.run_folder import atomic_write_json

        atomic_write_json(tmp_path / "private.json", {})
        assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
    finally:
        os.umask(previous)


@pytest.fixture
def never_trains(monkeypatch):
    """Training is an error: a damaged file must be refused before it."""
    from uqbench.stages import train

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the data files were checked")

    monkeypatch.setattr(train, "fit", refuse)


def _cifar_damage():
    import numpy as np
    from scipy.io import savemat

    def npy_garbage(r):
        (r / "CIFAR-10-C/fog.npy").write_bytes(b"\x93NUMPY garbage")

    def npy_truncated(r):
        path = r / "CIFAR-10-C/fog.npy"
        path.write_bytes(path.read_bytes()[:1000])

    return {
        "truncated .npy": (npy_truncated, "fog.npy is corrupt"),
        "garbage .npy": (npy_garbage, "fog.npy is corrupt"),
        "wrong shape": (
            lambda r: np.save(r / "CIFAR-10-C/fog.npy", np.zeros((7, 32, 32, 3), np.uint8)),
            "fog.npy is corrupt or not this test set",
        ),
        "wrong dtype": (
            lambda r: np.save(r / "CIFAR-10-C/fog.npy", np.zeros((200, 32, 32, 3), np.float32)),
            "fog.npy is corrupt or not this test set",
        ),
        "object array": (
            lambda r: np.save(r / "CIFAR-10-C/fog.npy", np.array([None] * 3), allow_pickle=True),
            "fog.npy is corrupt",
        ),
        "labels": (
            lambda r: np.save(r / "CIFAR-10-C/labels.npy", np.full(200, 11, np.uint8)),
            "labels.npy is corrupt",
        ),
        "svhn": (
            lambda r: savemat(r / "test_32x32.mat", {"X": np.zeros((8, 8), np.uint8)}),
            "test_32x32.mat is corrupt",
        ),
        "svhn garbage": (
            lambda r: (r / "test_32x32.mat").write_bytes(b"MATLAB 5.0" + b"\0" * 200),
            "test_32x32.mat is corrupt",
        ),
        "cifar100": (
            lambda r: (r / "cifar-100-python/test").write_bytes(b"\x80\x02garbage"),
            "cifar-100-python/test is corrupt",
        ),
    }


@pytest.mark.parametrize("damage", list(_cifar_damage()))
def test_damaged_cifar_evaluation_files_are_refused_before_training(
    tmp_path, capsys, never_trains, damage
):
    from test_cifar10c import make_root

    root = make_root(tmp_path / "data")
    write, message = _cifar_damage()[damage]
    write(root)
    data = ["data=cifar10c", f"data.root={root}", "data.corruptions=[fog,contrast]"]
    code = main(["fit", *data, f"out={tmp_path / 'runs'}", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda r: _truncate(r / "FashionMNIST/raw/t10k-images-idx3-ubyte.gz", 60), "corrupt"),
        (lambda r: _truncate(r / "FashionMNIST/raw/t10k-labels-idx1-ubyte.gz", 0), "corrupt"),
        (lambda r: _corrupt_deflate(r / "MNIST/raw/train-images-idx3-ubyte.gz"), "corrupt"),
        (lambda r: _no_images(r / "MNIST/raw"), "holds no images"),
        (lambda r: _few_images(r / "MNIST/raw"), "cannot give a stratified"),
    ],
)
def test_damaged_mnist_files_are_refused_before_training(
    tmp_path, capsys, never_trains, damage, message
):
    from test_mnist import make_root

    root = make_root(tmp_path / "data", gz=True)
    damage(root)
    code = main(["fit", "data=mnist", f"data.root={root}", f"out={tmp_path / 'runs'}", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


def _corrupt_deflate(path):
    import gzip

    raw = bytearray(gzip.compress(gzip.decompress(path.read_bytes())))
    raw[20:40] = b"\xff" * 20  # inside the deflate stream: zlib.error, not a gzip header error
    path.write_bytes(bytes(raw))


def _no_images(folder):
    import numpy as np
    from test_mnist import write_idx

    write_idx(folder / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8), gz=True)
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(0, np.uint8), gz=True)


def _few_images(folder):
    import numpy as np
    from test_mnist import write_idx

    write_idx(folder / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8), gz=True)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(3, dtype=np.uint8), gz=True)


@pytest.mark.parametrize(
    "option,message",
    [
        ("board=", "board= names no board"),
        ("board=[]", "board= names no board"),
        ("board.clock_mhz=inf", "board.clock_mhz: expected a finite float, got 'inf'"),
        ("board.clock_mhz=nan", "board.clock_mhz: expected a finite float, got 'nan'"),
        ("board.clock_mhz=0", "board.clock_mhz must be at least 1"),
        ("board.clock_mhz=1e9", "not a microcontroller's clock"),
        ("board.flash_kb=99999999999", "does not fit cortex-m4's address map"),
        ("board.flash_kb=0", "from 1 to 524,288"),
        ("board.ram_kb=-5", "board.ram_kb=-5 does not fit"),
        ("board.ram_kb=524289", "from 1 to 524,288"),
    ],
)
def test_every_board_option_is_checked_against_the_address_map(tmp_path, capsys, option, message):
    board = [] if option.startswith("board=") else ["board=small-mcu"]
    code = main(["deploy", f"run={tmp_path / 'missing'}", *board, option])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_m33_address_map_bounds_its_board(capsys, tmp_path):
    code = main(["deploy", f"run={tmp_path}", "board=mid-mcu", "board.ram_kb=400000"])
    assert code == 2 and "from 1 to 393,216" in capsys.readouterr().err


def test_a_cached_base_model_of_another_backbone_is_set_aside_and_retrained(
    tmp_path, capsys, monkeypatch
):
    import torch

    monkeypatch.setenv("UQBENCH_CACHE", str(tmp_path / "cache"))
    code = main(["fit", f"out={tmp_path}", "name=a", *FAST])
    assert code == 0, capsys.readouterr().err
    key = json.loads((tmp_path / "a" / "metrics.json").read_text())["training"]["base_key"]
    cached = tmp_path / "cache" / "base" / f"{key}.pt"
    state = torch.load(cached, weights_only=True)
    wrong_shapes = {k: v.reshape(-1)[:1] for k, v in state.items()}
    for damage in ({"other.weight": torch.zeros(3)}, wrong_shapes):
        torch.save(damage, cached)
        code = main(["fit", f"out={tmp_path}", *FAST])
        err = capsys.readouterr().err
        assert code == 0 and "is unusable" in err and "will train it again" in err, err
        assert torch.load(cached, weights_only=True).keys() == state.keys()


@pytest.mark.parametrize("where", ["a file", "read-only"])
def test_an_unwritable_cache_is_refused_before_training(
    tmp_path, capsys, monkeypatch, never_trains, read_only, where
):
    cache = tmp_path / "cache"
    if where == "a file":
        cache.write_text("x")
    else:
        cache.mkdir()
        read_only(cache)
    monkeypatch.setenv("UQBENCH_CACHE", str(cache))
    code = main(["fit", f"out={tmp_path / 'runs'}", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "UQBENCH_CACHE" in err and "cannot be written" in err, err
    assert not (tmp_path / "runs").exists()


def test_test_and_deploy_on_a_read_only_run_folder_are_refused_first(tmp_path, capsys, read_only):
    code = main(["fit", f"out={tmp_path}", "name=r", *FAST])
    assert code == 0, capsys.readouterr().err
    run = read_only(tmp_path / "r")
    for command in (["test", f"run={run}"], ["deploy", f"run={run}", "board=small-mcu"]):
        code = main(command)
        err = capsys.readouterr().err
        assert code == 2 and "cannot be written" in err and "Traceback" not in err, err


def test_download_into_a_read_only_root_is_refused(tmp_path, capsys, read_only):
    (tmp_path / "data").mkdir()
    root = read_only(tmp_path / "data")
    code = main(["fit", "data=mnist", "data.download=true", f"data.root={root}"])
    err = capsys.readouterr().err
    assert code == 2 and "data.download=true cannot save" in err and "cannot be written" in err


@pytest.mark.parametrize(
    "command,message",
    [
        (lambda t: ["fit", f"out={t}/{'x' * 256}"], "a component of 256 bytes"),
        (lambda t: ["fit", f"out={t}/{'/'.join(['y' * 200] * 25)}"], "too long a path"),
        (lambda t: ["fit", f"out={t}/file"], "is a file, not a folder"),
        (lambda t: ["fit", f"out={t}/file/below"], "is a file, not a folder"),
        (lambda t: ["bench", "method=msp", "seed=13", f"bench.out={t}/file"], "is a file"),
        (lambda t: ["corruptions", f"out={t}/folder"], "is a folder; give a file name"),
        (lambda t: ["leaderboard", f"runs={t}/folder", f"out={t}/file"], "is a file"),
    ],
)
def test_odd_output_locations_are_refused_before_work(tmp_path, capsys, command, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    code = main(command(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]
    assert list((tmp_path / "folder").iterdir()) == []
