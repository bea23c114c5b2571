"""``cifar10c`` on tiny files written in the official formats: pickle batches, CIFAR-10-C
``.npy``, SVHN ``.mat``, CIFAR-100 pickle; splits, memory-mapped CID, OOD, errors."""

import pickle

import numpy as np
import pytest
import torch
from scipy.io import savemat
from uqbench.datamodules.cifar10c import CIFAR10C, MEAN, STD

from uqbench.cli import main
from uqbench.errors import DataError

CORRUPTIONS = ["fog", "contrast"]
N_TEST = 40


def _images(rng, labels):
    """Learnable fake images: class c brightens channel c % 3 in row block c."""
    x = rng.integers(0, 60, (len(labels), 32, 32, 3))
    for i, c in enumerate(labels):
        x[i, 3 * c : 3 * c + 3, 4:28, c % 3] = 250
    return x.astype(np.uint8)


def _batch(path, images, labels, key=b"labels"):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "wb") as handle:
        pickle.dump({b"data": data, key: list(map(int, labels))}, handle)


def make_root(root):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        labels = np.arange(50) % 10
        _batch(root / "cifar-10-batches-py" / f"data_batch_{i}", _images(rng, labels), labels)
    test_labels = np.arange(N_TEST) % 10
    test = _images(rng, test_labels)
    _batch(root / "cifar-10-batches-py" / "test_batch", test, test_labels)
    (root / "CIFAR-10-C").mkdir()
    for name in CORRUPTIONS:
        stack = np.concatenate([np.clip(test.astype(int) - 20 * s, 0, 255) for s in range(5)])
        np.save(root / "CIFAR-10-C" / f"{name}.npy", stack.astype(np.uint8))
    np.save(root / "CIFAR-10-C" / "labels.npy", np.tile(test_labels, 5).astype(np.uint8))
    svhn = rng.integers(0, 255, (32, 32, 3, 30)).astype(np.uint8)
    savemat(root / "test_32x32.mat", {"X": svhn, "y": (np.arange(30) % 10 + 1)[:, None]})
    _batch(
        root / "cifar-100-python" / "test",
        _images(rng, np.arange(25) % 10),
        np.arange(25),
        b"fine_labels",
    )
    return root


def test_reads_every_official_format_and_memory_maps_cid(tmp_path):
    root = make_root(tmp_path)
    data = CIFAR10C(root=str(root), corruptions=tuple(CORRUPTIONS))
    data.setup()
    assert len(data.train_set) == 225 and len(data.dev_set) == 25 and len(data.test_set) == N_TEST
    x, y = data.test_set.normalized(slice(None)), data.test_set.labels
    assert data.train_set.images.dtype == torch.uint8  # 8-bit in memory, normalized as read
    torch.testing.assert_close(data.test_set[3][0], x[3])
    torch.testing.assert_close(
        torch.stack([p[0] for p in data.test_set.__getitems__([1, 3])]), x[[1, 3]]
    )
    with open(root / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        raw = pickle.load(handle, encoding="bytes")[b"data"].reshape(-1, 3, 32, 32)
    torch.testing.assert_close(x, (torch.from_numpy(raw).float() / 255 - MEAN) / STD)
    cid = data.cid_set("fog", 3)
    stack = np.load(root / "CIFAR-10-C" / "fog.npy")
    assert isinstance(cid.images, np.memmap) and len(cid) == N_TEST
    first, label = cid[0]
    expected = torch.from_numpy(stack[2 * N_TEST].transpose(2, 0, 1).copy()).float() / 255
    torch.testing.assert_close(first, (expected - MEAN) / STD)
    assert label == int(y[0])
    batch = cid.__getitems__([3, 4, 7])  # what a DataLoader asks for: one read per batch
    for (bx, by), i in zip(batch, [3, 4, 7], strict=True):
        torch.testing.assert_close(bx, cid[i][0])
        assert int(by) == cid[i][1]
    svhn = data.ood_set("svhn")
    svhn_x, svhn_y = svhn.normalized(slice(None)), svhn.labels
    assert svhn_x.shape == (30, 3, 32, 32) and (svhn_y == -1).all()
    assert data.ood_set("cifar100").normalized(slice(None)).shape == (25, 3, 32, 32)
    names = [s.name for s in data.eval_sets()]
    assert names[-2:] == ["ood/cifar100", "ood/svhn"] and len(names) == 1 + 2 * 5 + 2


def test_missing_files_are_all_listed_before_anything_runs(capsys, tmp_path):
    root = make_root(tmp_path / "data")
    (root / "test_32x32.mat").unlink()
    (root / "CIFAR-10-C" / "fog.npy").unlink()
    out = tmp_path / "runs"
    code = main(
        [
            "fit",
            "data=cifar10c",
            f"data.root={root}",
            "data.corruptions=[fog,contrast]",
            f"out={out}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "missing 2 file(s)" in err
    assert str(root / "test_32x32.mat") in err and str(root / "CIFAR-10-C" / "fog.npy") in err
    assert "ufldl.stanford.edu" in err and "zenodo" in err and not out.exists()
    code = main(["fit", "data=cifar10c", "data.corruptions=[fgo]", f"out={out}"])
    assert code == 2 and "not in CIFAR-10-C" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage,where,message",
    [
        (
            lambda r: (r / "cifar-10-batches-py/data_batch_2").write_bytes(b"not a pickle"),
            "setup",
            "data_batch_2 is corrupt",
        ),
        (
            lambda r: np.save(r / "CIFAR-10-C/fog.npy", np.zeros((5 * N_TEST, 32, 32), np.uint8)),
            "cid",
            "fog.npy is corrupt or not this test set",
        ),
        (
            lambda r: (r / "CIFAR-10-C/fog.npy").write_bytes(b"\x93NUMPY garbage"),
            "cid",
            "fog.npy is corrupt",
        ),
        (
            lambda r: np.save(r / "CIFAR-10-C/labels.npy", np.zeros(7, np.uint8)),
            "cid",
            "labels.npy",
        ),
        (
            lambda r: (r / "test_32x32.mat").write_bytes(b"MATLAB?"),
            "svhn",
            "test_32x32.mat is corrupt",
        ),
    ],
)
def test_a_corrupt_file_is_named_never_loaded(tmp_path, damage, where, message):
    root = make_root(tmp_path)
    damage(root)
    data = CIFAR10C(root=str(root), corruptions=tuple(CORRUPTIONS))
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        data.setup()
        if where == "cid":
            data.cid_set("fog", 1)
        if where == "svhn":
            data.ood_set("svhn")


def test_snapuq_fits_on_cifar10c_as_typed(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("UQBENCH_DATA", str(make_root(tmp_path / "data")))
    code = main(
        [
            "fit",
            "method=snapuq",
            "data=cifar10c",
            "data.corruptions=[fog,contrast]",
            "trainer.max_epochs=1",
            f"out={tmp_path}",
            "name=c",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "OOD cifar100 25, svhn 30" in out and "backbone=resnet8" in out


def test_cifar10_generates_cid_with_the_engine_without_cifar10c_files(tmp_path, capsys):
    import shutil

    from uqbench.datamodules.cifar10c import CIFAR10
    from uqbench.datamodules.corruptions import corrupt

    root = make_root(tmp_path / "data")
    shutil.rmtree(root / "CIFAR-10-C")
    data = CIFAR10(root=str(root), corruptions=("fog", "pixelate"))
    data.check_files()  # CIFAR-10-C is not needed
    data.setup()
    x, y = data.cid_set("pixelate", 4).images, data.cid_set("pixelate", 4).labels
    test = data.test_set.images.float() / 255
    expected = corrupt(test, "pixelate", 4, data.split_seed)
    assert torch.equal(x, (expected * 255).round().to(torch.uint8))
    assert torch.equal(y, data.test_set.labels) and not torch.equal(x, data.test_set.images)
    assert [s.name for s in data.eval_sets()][1:3] == ["cid/fog/1", "cid/fog/2"]
    # cifar10c without its files names them and points at the engine; a bad source exits 2.
    code = main(["fit", "data=cifar10c", f"data.root={root}", f"out={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "CIFAR-10-C/fog.npy" in err and "data.cid=engine" in err
    code = main(["fit", "data=cifar10", "data.cid=hendrycks", f"out={tmp_path}"])
    assert code == 2 and "choose files or engine" in capsys.readouterr().err


class _Payload:
    """A pickle that runs ``touch <marker>`` when loaded by ``pickle.load``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("batch", ["data_batch_1", "test_batch"])
def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path, protocol, batch):
    root, marker = make_root(tmp_path / "data"), tmp_path / "executed"
    path = root / "cifar-10-batches-py" / batch
    images = np.zeros((10, 3072), np.uint8)
    payload = {b"data": images, b"labels": [0] * 10, b"x": _Payload(marker)}
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(DataError, match=f"{batch} is not a plain data file.*posix.system"):
        CIFAR10C(root=str(root), corruptions=tuple(CORRUPTIONS)).setup()
    assert not marker.exists()
    # The same file is what a plain pickle.load would have run (the test's payload is live).
    with open(path, "rb") as handle:
        pickle.load(handle, encoding="bytes")
    assert marker.exists()


@pytest.mark.parametrize(
    "content,protocol,reason",
    [
        ({b"data": np.array([[None]] * 2), b"labels": [0, 1]}, 2, "dtype object"),
        ({b"data": np.array([[None]] * 2), b"labels": [0, 1]}, 5, "dtype object"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, {1}]}, 2, "__builtin__.set"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, {1}]}, 5, "a set"),
        ([np.zeros((2, 3072), np.uint8)], 2, "not a dict"),
    ],
)
def test_a_pickle_of_other_content_is_refused(tmp_path, content, protocol, reason):
    root = make_root(tmp_path / "data")
    (root / "cifar-100-python" / "test").write_bytes(pickle.dumps(content, protocol=protocol))
    with pytest.raises(DataError, match=f"cifar-100-python/test .*{reason}"):
        CIFAR10C(root=str(root), corruptions=tuple(CORRUPTIONS)).ood_set("cifar100")


def test_python2_pickles_as_the_official_files_are_written_load(tmp_path):
    """The official batches are Python 2 pickles (protocol 2, byte strings as STRING opcodes):
    written here opcode by opcode, since Python 3 cannot write them."""
    from uqbench.datamodules.files import load_pickle

    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    raw = data.tobytes()
    py2 = (
        b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray"
        b"\nq\x03K\x00\x85U\x01b\x87Rq\x04(K\x01K\x02M\x00\x0c\x86cnumpy\ndtype\nq\x05U\x02u1"
        b"K\x00K\x01\x87Rq\x06(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T"
        + len(raw).to_bytes(4, "little")
        + raw
        + b"tbU\x06labels]q\x07(K\x01K\x02eu."
    )
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2)
    batch = load_pickle(path)
    assert np.array_equal(batch[b"data"], data) and batch[b"labels"] == [1, 2]
