"""``tinyimagenet`` on a tiny tree written in the official layout: wnids.txt, train JPEG folders,
val images with val_annotations.txt, Tiny-ImageNet-C JPEG folders; held-out classes as OOD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from uqbench.datamodules.tinyimagenet import HELD_OUT, TinyImageNet

from uqbench.cli import main
from uqbench.errors import DataError

CORRUPTIONS = ("fog", "contrast")


def _jpeg(path, label, rng, gray=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 50, (64, 64, 3))
    x[(label % 8) * 8 : (label % 8) * 8 + 8, :, (label // 8) % 3] = 250
    image = Image.fromarray(x.astype(np.uint8))
    (image.convert("L") if gray else image).save(path, "JPEG", quality=95)


def make_root(root, train_per_class=10, val_per_class=1, corruptions=CORRUPTIONS):
    rng = np.random.default_rng(0)
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{1440000 + 7 * i:08d}" for i in range(200)]
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines, k = [], 0
    for c, wnid in enumerate(wnids):
        for i in range(train_per_class):
            _jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", c, rng, gray=i == 0)
        for _ in range(val_per_class):
            _jpeg(folder / "val/images" / f"val_{k}.JPEG", c, rng)
            lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
            for name in corruptions:
                for s in range(1, 6):
                    target = root / "Tiny-ImageNet-C" / name / str(s) / wnid / f"val_{k}.JPEG"
                    _jpeg(target, c, rng)
            k += 1
    (folder / "val/val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("tin"))


def test_reads_the_official_layout_with_held_out_classes(root):
    data = TinyImageNet(root=str(root), corruptions=CORRUPTIONS)
    data.setup()
    ids, held = data.class_split()
    assert len(ids) == TinyImageNet.num_classes == 160 and len(held) == HELD_OUT
    assert not set(ids) & set(held)
    assert len(data.train_set) + len(data.dev_set) == 160 * 10 and len(data.dev_set) == 160
    x, y = data.test_set[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and 0 <= int(y) < 160
    assert len(data.test_set) == 160
    ood_x, ood_y = data.ood_set("heldout")[0]
    assert len(data.ood_set("heldout")) == HELD_OUT and int(ood_y) == -1
    cid = data.cid_set("fog", 3)
    assert len(cid) == 160 and cid[0][0].shape == (3, 64, 64)
    assert len(data.dev_shift_set()) == len(data.dev_set)
    names = [s.name for s in data.eval_sets()]
    assert names[0] == "id" and names[-1] == "ood/heldout" and len(names) == 1 + 2 * 5 + 1


def test_the_class_split_does_not_follow_split_seed(root):
    a = TinyImageNet(root=str(root), corruptions=CORRUPTIONS, split_seed=0).class_split()
    b = TinyImageNet(root=str(root), corruptions=CORRUPTIONS, split_seed=5).class_split()
    assert a == b


def test_missing_files_are_listed_at_once(tmp_path, capsys):
    code = main(["fit", "data=tinyimagenet", f"data.root={tmp_path}", f"out={tmp_path}/runs"])
    err = capsys.readouterr().err
    assert code == 2
    assert "tiny-imagenet-200/wnids.txt" in err and "val_annotations.txt" in err
    assert "Tiny-ImageNet-C/gaussian_noise/1" in err and "cs231n.stanford.edu" in err
    assert not (tmp_path / "runs").exists()


def test_corrupt_files_are_named(tmp_path):
    root = make_root(tmp_path, corruptions=("fog",))
    bad = next((root / "tiny-imagenet-200/train").glob("*/images/*.JPEG"))
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match=f"{bad.name} is corrupt"):
        TinyImageNet(root=str(root), corruptions=("fog",)).setup()
    small = root / "tiny-imagenet-200/val/images/val_3.JPEG"
    Image.new("RGB", (32, 32)).save(small, "JPEG")
    bad.unlink()
    with pytest.raises(DataError, match="val_3.JPEG is corrupt: .* not 3x64x64"):
        TinyImageNet(root=str(root), corruptions=("fog",)).setup()
    (root / "tiny-imagenet-200/wnids.txt").write_text("n01\n")
    with pytest.raises(DataError, match="wnids.txt is corrupt"):
        TinyImageNet(root=str(root), corruptions=("fog",)).check_files()


@pytest.mark.slow
def test_fit_runs_end_to_end(root, tmp_path, capsys):
    code = main(
        [
            "fit",
            "data=tinyimagenet",
            f"data.root={root}",
            "data.corruptions=[fog]",
            "method=msp",
            "trainer.max_epochs=1",
            "backbone.width=0.25",
            f"out={tmp_path}",
            "name=t",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "OOD heldout 40" in out
