"""``mnist`` on tiny files written in the official IDX format: splits, OOD, errors."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from uqbench.datamodules.mnist import MNIST

from uqbench.cli import main
from uqbench.errors import DataError


def write_idx(path, array, gz=False):
    """An IDX file of unsigned bytes, as LeCun's format defines it."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_root(root, n_train=200, n_test=60, gz=False):
    """Learnable fake digits: class c lights up row block c."""
    rng = np.random.default_rng(0)

    def split(n):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 4 : 2 * c + 7, 6:22] = 250
        return images, labels

    for dataset, name, n in (
        ("MNIST", "train", n_train),
        ("MNIST", "t10k", n_test),
        ("FashionMNIST", "t10k", n_test),
    ):
        images, labels = split(n)
        folder = root / dataset / "raw"
        write_idx(folder / f"{name}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{name}-labels-idx1-ubyte", labels, gz)
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_reads_the_official_layout_with_stratified_dev_and_fashion_ood(tmp_path, gz):
    root = make_root(tmp_path, gz=gz)
    data = MNIST(root=str(root))
    data.setup()
    assert len(data.train_set) == 180 and len(data.dev_set) == 20 and len(data.test_set) == 60
    assert sorted(data.dev_set.tensors[1].tolist()) == sorted(list(range(10)) * 2)  # stratified
    x, y = data.test_set.tensors
    raw = np.frombuffer(
        (gzip.decompress if gz else bytes)(
            (root / "MNIST/raw" / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))).read_bytes()
        ),
        np.uint8,
        offset=16,
    ).reshape(60, 28, 28)
    torch.testing.assert_close(x[:, 0], (torch.from_numpy(raw / 255.0).float() - 0.1307) / 0.3081)
    ood_x, ood_y = data.ood_set("fashion").tensors
    assert ood_x.shape == (60, 1, 28, 28) and (ood_y == -1).all()
    names = [s.name for s in data.eval_sets()]
    assert names[0] == "id" and names[-1] == "ood/fashion" and len(names) == 1 + 17 * 5 + 1


def test_every_missing_file_is_listed_before_anything_runs(capsys, tmp_path):
    root = make_root(tmp_path / "data")
    (root / "MNIST/raw/t10k-labels-idx1-ubyte").unlink()
    (root / "FashionMNIST/raw/t10k-images-idx3-ubyte").unlink()
    code = main(["fit", "data=mnist", f"data.root={root}", f"out={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and "missing 2 file(s)" in err
    assert str(root / "MNIST/raw/t10k-labels-idx1-ubyte") in err
    assert str(root / "FashionMNIST/raw/t10k-images-idx3-ubyte") in err
    assert "fashion-mnist" in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:1000]), "truncated or padded"),
        (lambda p: p.write_bytes(b"\x00\x00\x08\x01" + p.read_bytes()[4:]), "not an IDX file"),
        (lambda p: p.write_bytes(b""), "not an IDX file"),
    ],
)
def test_a_corrupt_file_is_named_never_loaded(tmp_path, damage, message):
    root = make_root(tmp_path)
    damage(root / "MNIST/raw/train-images-idx3-ubyte")
    with pytest.raises(DataError, match=message) as error:
        MNIST(root=str(root)).setup()
    assert "train-images-idx3-ubyte" in str(error.value)


def test_labels_out_of_range_or_miscounted_are_corrupt(tmp_path):
    root = make_root(tmp_path)
    write_idx(root / "MNIST/raw/train-labels-idx1-ubyte", np.full(200, 12))
    with pytest.raises(DataError, match="a label is 12"):
        MNIST(root=str(root)).setup()
    write_idx(root / "MNIST/raw/train-labels-idx1-ubyte", np.zeros(150))
    with pytest.raises(DataError, match="200 images but 150 labels"):
        MNIST(root=str(root)).setup()


def test_fit_runs_end_to_end_on_official_format_files(capsys, tmp_path, monkeypatch):
    root = make_root(tmp_path / "data")
    monkeypatch.setenv("UQBENCH_DATA", str(root))  # the default root
    code = main(
        ["fit", "data=mnist", "method=msp", "trainer.max_epochs=2", f"out={tmp_path}", "name=m"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "OOD fashion 60" in out and "data=mnist" in out
    # 180 training digits at batch 256 for 2 epochs: 2 steps, far from the recipe's 10,550.
    assert "takes 2 optimizer steps, under a tenth of the 10,550" in err
    training = json.loads((tmp_path / "m" / "metrics.json").read_text())["training"]
    assert training["optimizer_steps"] == 2


def write_mnistc(root, corruptions=("fog", "zigzag"), n_test=60, dtype=np.uint8):
    """MNIST-C's official layout: mnist_c/<corruption>/test_{images,labels}.npy, images
    [N, 28, 28, 1] 8-bit levels."""
    rng = np.random.default_rng(1)
    for corruption in corruptions:
        folder = root / "mnist_c" / corruption
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "test_images.npy", rng.integers(0, 256, (n_test, 28, 28, 1)).astype(dtype))
        np.save(folder / "test_labels.npy", (np.arange(n_test) % 10).astype(np.uint8))
    return root


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_mnistc_files_are_the_cid_sets_at_their_single_level(tmp_path, dtype):
    root = write_mnistc(make_root(tmp_path), dtype=dtype)
    data = MNIST(root=str(root), cid="mnistc", corruptions=("fog", "zigzag"))
    data.setup()
    names = [s.name for s in data.eval_sets()]
    assert names == ["id", "cid/fog/1", "cid/zigzag/1", "ood/fashion"]
    x, y = data.cid_set("zigzag", 1).tensors
    raw = np.load(root / "mnist_c/zigzag/test_images.npy")[..., 0]
    torch.testing.assert_close(x[:, 0], (torch.from_numpy(raw / 255.0).float() - 0.1307) / 0.3081)
    assert y.tolist() == (np.arange(60) % 10).tolist()
    assert data.data_files()["mnist_c/fog/test_images.npy"].startswith("no published checksum")


def test_mnistc_missing_or_corrupt_files_are_named(tmp_path, capsys):
    root = write_mnistc(make_root(tmp_path / "data"), corruptions=("fog",))
    code = main(["fit", "data=mnist", "data.cid=mnistc", f"data.root={root}", f"out={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "missing 28 file(s)" in err  # 14 corruptions x 2 files
    assert str(root / "mnist_c/zigzag/test_images.npy") in err and "zenodo.org" in err
    np.save(root / "mnist_c/fog/test_images.npy", np.full((60, 28, 28, 1), 300.0))
    data = MNIST(root=str(root), cid="mnistc", corruptions=("fog",))
    with pytest.raises(DataError, match="not 8-bit levels"):
        data.cid_set("fog", 1)
    np.save(root / "mnist_c/fog/test_images.npy", np.zeros((59, 28, 28, 1), np.uint8))
    with pytest.raises(DataError, match=r"expected \(60, 28, 28, 1\)"):
        data.cid_set("fog", 1)
    (root / "mnist_c/fog/test_labels.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(root / "mnist_c/fog/test_images.npy", np.zeros((60, 28, 28, 1), np.uint8))
    with pytest.raises(DataError, match="test_labels.npy is corrupt"):
        data.cid_set("fog", 1)


@pytest.mark.parametrize(
    "option, message",
    [("data.cid=mnist-c", "choose engine or mnistc"), ("data.corruptions=[snow]", "not in")],
)
def test_bad_cid_options_exit_2_naming_the_choices(tmp_path, capsys, option, message):
    code = main(["fit", "data=mnist", option, f"data.root={tmp_path}", f"out={tmp_path}"])
    assert code == 2 and message in capsys.readouterr().err
