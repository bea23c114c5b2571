"""Downloads against a local HTTP server on the loopback address: fetched, checked, renamed
into place; interrupted, corrupted or refused downloads leave nothing that looks complete; the
run records whether each data file is the official one."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import torchvision.datasets as tvd
from test_cifar10c import make_root as make_cifar_root
from test_mnist import make_root as make_mnist_root
from test_mnist import write_mnistc
from test_speechcommands import make_root as make_speech_root
from test_tinyimagenet import make_root as make_tin_root
from uqbench.datamodules import cifar10c, mnist, speechcommands, tinyimagenet

from uqbench.cli import main
from uqbench.download import Resource, fetch, md5sum, provenance
from uqbench.errors import DataError


class _Handler(http.server.SimpleHTTPRequestHandler):
    cut_short: set[str] = set()

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):  # noqa: N802 - the http.server name
        if self.path.lstrip("/") in self.cut_short:  # promise more bytes than are sent
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """(served folder, base URL) of a threaded HTTP server on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: _Handler(*a, directory=str(served), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    _Handler.cut_short = set()


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_published_checksums_are_torchvisions():
    """The MD5s the project carries equal those of torchvision's dataset classes."""
    for dataset, cls in (("MNIST", tvd.MNIST), ("FashionMNIST", tvd.FashionMNIST)):
        published = dict(cls.resources)
        for (name_set, name), md5 in mnist.MD5.items():
            if name_set == dataset:
                assert published[f"{name}.gz"] == md5
    assert cifar10c.RESOURCES["cifar-10-batches-py"].md5 == tvd.CIFAR10.tgz_md5
    assert cifar10c.RESOURCES["cifar-100-python"].md5 == tvd.CIFAR100.tgz_md5
    assert cifar10c.RESOURCES["test_32x32.mat"].md5 == tvd.SVHN.split_list["test"][2]
    for name, md5 in tvd.CIFAR10.train_list + tvd.CIFAR10.test_list:
        assert cifar10c.FILE_MD5[f"cifar-10-batches-py/{name}"] == md5
    assert cifar10c.FILE_MD5["cifar-100-python/test"] == dict(tvd.CIFAR100.test_list)["test"]


def test_mnist_downloads_from_a_mirror_and_records_the_files(server, tmp_path, monkeypatch, capsys):
    served, url = server
    make_mnist_root(served, gz=True)
    official = {key: md5sum(served / mnist.resource(*key).target) for key in mnist.MD5}
    official[("MNIST", "t10k-images-idx3-ubyte")] = "0" * 32  # this one is not "published"
    monkeypatch.setattr(mnist, "MD5", official)
    monkeypatch.setenv("UQBENCH_DATA_MIRROR", url)
    root = tmp_path / "data"
    # The user already has one file, a well-formed copy that is not the official one.
    user_copy = root / "MNIST/raw/t10k-images-idx3-ubyte.gz"
    user_copy.parent.mkdir(parents=True)
    user_copy.write_bytes((served / "MNIST/raw/t10k-images-idx3-ubyte.gz").read_bytes())
    code = main(
        [
            "fit",
            "data=mnist",
            "data.download=true",
            f"data.root={root}",
            "method=msp",
            "trainer.max_epochs=1",
            f"out={tmp_path}",
            "name=m",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (root / "MNIST/raw").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    files = json.loads((tmp_path / "m/config.json").read_text())["run"]["data_files"]
    assert files["MNIST/raw/train-images-idx3-ubyte.gz"] == "official"
    assert files["MNIST/raw/t10k-images-idx3-ubyte.gz"].startswith("not the official file")
    assert files["FashionMNIST/raw/t10k-labels-idx1-ubyte.gz"] == "official"


def test_a_corrupted_download_is_refused_and_nothing_is_kept(server, tmp_path, monkeypatch):
    served, url = server
    make_mnist_root(served, gz=True)
    monkeypatch.setenv("UQBENCH_DATA_MIRROR", url)
    root = tmp_path / "data"
    # The served fixtures are not the published files: their MD5s differ.
    with pytest.raises(DataError, match="not the published f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        mnist.MNIST(root=str(root), download=True).check_files()
    assert [p for p in _leftovers(root) if p.endswith(".gz")] == []


def test_an_interrupted_download_leaves_nothing_that_looks_complete(server, tmp_path, monkeypatch):
    served, url = server
    make_mnist_root(served, gz=True)
    _Handler.cut_short = {"MNIST/raw/train-images-idx3-ubyte.gz"}
    resource = dataclasses.replace(mnist.resource("MNIST", "train-images-idx3-ubyte"), md5=None)
    monkeypatch.setenv("UQBENCH_DATA_MIRROR", url)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="downloading .* failed"):
        fetch(resource, root)
    assert [p for p in _leftovers(root) if Path(p).is_file() or "." in Path(p).name] == []


def test_ctrl_c_during_a_download_removes_the_partial_file(tmp_path, monkeypatch):
    class Stream(io.BytesIO):
        headers: dict = {}

        def read(self, size=-1):
            raise KeyboardInterrupt

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Stream())
    with pytest.raises(KeyboardInterrupt):
        fetch(Resource("http://127.0.0.1:9/x.bin", None, "x.bin"), tmp_path / "data")
    assert _leftovers(tmp_path / "data") == []


def test_a_refused_connection_names_the_url_and_the_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("UQBENCH_DATA_MIRROR", "http://127.0.0.1:9")  # discard port: refused
    root = tmp_path / "data"
    code = main(["fit", "data=mnist", "data.download=true", f"data.root={root}", f"out={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "downloading http://127.0.0.1:9/MNIST/raw/train-images-idx3-ubyte.gz failed" in err
    assert str(root / "MNIST" / "raw") in err
    assert [p.name for p in tmp_path.iterdir() if p.name != "data"] == []  # no run folder


def _tar(path: Path, folder: Path) -> str:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_cifar10c_archives_are_unpacked_whole_and_fixtures_marked_unofficial(
    server, tmp_path, monkeypatch
):
    served, url = server
    source = make_cifar_root(tmp_path / "source")
    patched = {}
    for key, resource in cifar10c.RESOURCES.items():
        if resource.unpack:
            md5 = _tar(served / resource.filename, source / resource.target)
        else:
            (served / resource.target).write_bytes((source / resource.target).read_bytes())
            md5 = md5sum(served / resource.target)
        patched[key] = dataclasses.replace(resource, md5=md5)
    monkeypatch.setattr(cifar10c, "RESOURCES", patched)
    monkeypatch.setenv("UQBENCH_DATA_MIRROR", url)
    root = tmp_path / "data"
    data = cifar10c.CIFAR10C(root=str(root), corruptions=("fog", "contrast"), download=True)
    data.check_files()
    assert sorted(p.name for p in root.iterdir()) == [
        "CIFAR-10-C",
        "cifar-10-batches-py",
        "cifar-100-python",
        "test_32x32.mat",
    ]  # no archive, scratch folder or partial file left
    files = data.data_files()
    assert files["cifar-10-batches-py/test_batch"].startswith("not the official file")
    assert files["CIFAR-10-C/fog.npy"] == "no published checksum"
    data.setup()
    assert len(data.cid_set("fog", 2)) == 40


def test_mnistc_zip_is_fetched_and_unpacked_when_cid_needs_it(server, tmp_path, monkeypatch):
    served, url = server
    source = write_mnistc(tmp_path / "source", corruptions=mnist.MNISTC_CORRUPTIONS)
    archive = served / "mnist_c.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted((source / "mnist_c").rglob("*.npy")):
            bundle.write(path, path.relative_to(source))
    monkeypatch.setattr(mnist, "MNISTC", dataclasses.replace(mnist.MNISTC, md5=md5sum(archive)))
    monkeypatch.setenv("UQBENCH_DATA_MIRROR", url)
    root = make_mnist_root(tmp_path / "data")
    data = mnist.MNIST(root=str(root), cid="mnistc", download=True)
    data.check_files()
    assert sorted(p.name for p in (root / "mnist_c").iterdir()) == sorted(mnist.MNISTC_CORRUPTIONS)
    assert _leftovers(root / "mnist_c") == _leftovers(source / "mnist_c")
    data.setup()
    assert len(data.cid_set("canny_edges", 1)) == 60


def test_tinyimagenet_zip_and_tinyimagenet_c_tar_are_fetched(server, tmp_path, monkeypatch):
    served, url = server
    source = make_tin_root(tmp_path / "source", train_per_class=1, corruptions=("fog",))
    zipped = served / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(zipped, "w") as bundle:
        for path in sorted((source / "tiny-imagenet-200").rglob("*")):
            bundle.write(path, path.relative_to(source))
    with tarfile.open(served / "Tiny-ImageNet-C.tar", "w") as tar:
        tar.add(source / "Tiny-ImageNet-C", arcname="Tiny-ImageNet-C")
    resources = dict(tinyimagenet.RESOURCES)
    resources["tiny-imagenet-200"] = dataclasses.replace(
        resources["tiny-imagenet-200"], md5=md5sum(zipped)
    )
    monkeypatch.setattr(tinyimagenet, "RESOURCES", resources)
    monkeypatch.setenv("UQBENCH_DATA_MIRROR", url)
    root = tmp_path / "data"
    data = tinyimagenet.TinyImageNet(root=str(root), corruptions=("fog",), download=True)
    data.check_files()
    assert sorted(p.name for p in root.iterdir()) == ["Tiny-ImageNet-C", "tiny-imagenet-200"]
    assert _leftovers(root) == _leftovers(source)


def test_speechcommands_flat_archive_is_sha256_checked_and_unpacked(server, tmp_path, monkeypatch):
    served, url = server
    source = make_speech_root(tmp_path / "source", per_split=(1, 1, 1))
    words = source / speechcommands.FOLDER
    archive = served / "speech_commands_v0.02.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # flat: the members are the word folders
        for path in sorted(words.iterdir()):
            tar.add(path, arcname=path.name)
    monkeypatch.setenv("UQBENCH_DATA_MIRROR", url)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="not the published"):  # the real SHA-256 differs
        speechcommands.SpeechCommands(root=str(root), download=True).check_files()
    assert _leftovers(root) == []
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(
        speechcommands, "RESOURCE", dataclasses.replace(speechcommands.RESOURCE, sha256=sha)
    )
    speechcommands.SpeechCommands(root=str(root), download=True).check_files()
    assert _leftovers(root / speechcommands.FOLDER) == _leftovers(words)


def test_an_archive_that_is_not_one_is_refused(server, tmp_path, monkeypatch):
    served, url = server
    (served / "cifar-100-python.tar.gz").write_bytes(b"not a tar archive")
    resource = dataclasses.replace(cifar10c.RESOURCES["cifar-100-python"], md5=None)
    monkeypatch.setenv("UQBENCH_DATA_MIRROR", url)
    with pytest.raises(DataError, match="is not a readable archive"):
        fetch(resource, tmp_path / "data")
    assert _leftovers(tmp_path / "data") == []


def test_provenance_of_a_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert provenance(path, "900150983cd24fb0d6963f7d28e17f72") == "official"
    assert provenance(path, "0" * 32).startswith("not the official file (md5 9001")
    assert provenance(path, None) == "no published checksum"


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w:gz") as tar:
        top = tarfile.TarInfo("cifar-100-python")
        top.type = tarfile.DIRTYPE
        tar.addfile(top)
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 0
    return info


@pytest.mark.parametrize(
    "member,reason",
    [
        (_member("/etc/evil"), "points outside"),
        (_member("cifar-100-python/../../evil"), "points outside"),
        (_member("cifar-100-python/test", tarfile.SYMTYPE, "/etc/passwd"), "a link"),
        (_member("cifar-100-python/test", tarfile.SYMTYPE, "meta"), "a link"),
        (_member("cifar-100-python/test", tarfile.LNKTYPE, "cifar-100-python"), "a link"),
        (_member("cifar-100-python/dev", tarfile.CHRTYPE), "a link or a special file"),
        (_member("cifar-100-python/fifo", tarfile.FIFOTYPE), "a link or a special file"),
    ],
)
def test_an_archive_member_outside_or_not_a_plain_file_is_refused(
    server, tmp_path, monkeypatch, member, reason
):
    served, url = server
    _tar_with(served / "cifar-100-python.tar.gz", member)
    resource = dataclasses.replace(cifar10c.RESOURCES["cifar-100-python"], md5=None)
    monkeypatch.setenv("UQBENCH_DATA_MIRROR", url)
    with pytest.raises(DataError, match=f"is not a readable archive.*{reason}"):
        fetch(resource, tmp_path / "data")
    assert _leftovers(tmp_path / "data") == [] and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name", ["/abs/evil", "top/../../evil"])
def test_a_zip_member_outside_is_refused(server, tmp_path, monkeypatch, name):
    served, url = server
    with zipfile.ZipFile(served / "tiny-imagenet-200.zip", "w") as zipped:
        zipped.writestr("tiny-imagenet-200/a.txt", "a")
        zipped.writestr(zipfile.ZipInfo(name), "evil")
    resource = Resource(f"{url}/tiny-imagenet-200.zip", None, "tiny-imagenet-200", unpack=True)
    with pytest.raises(DataError, match="points outside"):
        fetch(resource, tmp_path / "data")
    assert _leftovers(tmp_path / "data") == []


def test_a_zip_symlink_member_is_refused(server, tmp_path):
    served, url = server
    with zipfile.ZipFile(served / "t.zip", "w") as zipped:
        link = zipfile.ZipInfo("t/link")
        link.external_attr = 0o120777 << 16  # a symbolic link, as zip -y stores one
        zipped.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match="a link"):
        fetch(Resource(f"{url}/t.zip", None, "t", unpack=True), tmp_path / "data")


def test_a_killed_downloads_partial_file_is_cleaned_by_the_next(server, tmp_path):
    """A download killed with SIGKILL (a real process) leaves its hidden partial file; the next
    download of that file removes it, and a live download's is left alone."""
    import os
    import signal
    import subprocess
    import sys

    served, url = server
    (served / "big.bin").write_bytes(os.urandom(1 << 20))
    root = tmp_path / "data"
    script = (
        "import sys, urllib.request\n"
        "from uqbench.download import fetch, Resource\n"
        "real = urllib.request.urlopen\n"
        "class Slow:\n"
        "    def __init__(s, r): s.r = r; s.headers = r.headers\n"
        "    def __enter__(s): return s\n"
        "    def __exit__(s, *a): return False\n"
        "    def read(s, n):\n"
        "        print('reading', flush=True); import time; time.sleep(60)\n"
        "urllib.request.urlopen = lambda u, timeout: Slow(real(u, timeout=timeout))\n"
        f"fetch(Resource('{url}/big.bin', None, 'big.bin'), __import__('pathlib').Path('{root}'))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "reading"
    child.send_signal(signal.SIGKILL)
    child.wait()
    left = [p.name for p in root.iterdir()]
    assert len(left) == 1 and left[0].startswith(".big.bin.partial@")
    fetch(Resource(f"{url}/big.bin", None, "big.bin"), root)
    assert [p.name for p in root.iterdir()] == ["big.bin"]


def test_extracted_mnist_files_are_checked_against_the_official_contents_sha256(
    tmp_path, monkeypatch
):
    """An extracted IDX file is official when its content's SHA-256 is the official one (the
    published MD5s are of the .gz), and named not official otherwise."""
    import hashlib

    root = make_mnist_root(tmp_path / "data")
    raw = root / "MNIST/raw/train-images-idx3-ubyte"
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    monkeypatch.setitem(mnist.RAW_SHA256, ("MNIST", "train-images-idx3-ubyte"), digest)
    files = mnist.MNIST(root=str(root)).data_files()
    assert files["MNIST/raw/train-images-idx3-ubyte"] == "official"
    fixture = files["MNIST/raw/t10k-images-idx3-ubyte"]
    official = mnist.RAW_SHA256[("MNIST", "t10k-images-idx3-ubyte")]
    assert fixture.startswith("not the official file (sha256 ") and official in fixture
    assert len(mnist.RAW_SHA256) == 6 and all(len(d) == 64 for d in mnist.RAW_SHA256.values())


def test_frost_photographs_are_fetched_with_the_data_or_the_run_says_why_not(server, tmp_path):
    import cv2
    import numpy as np
    from uqbench.datamodules.corruptions import frost_photos

    served, url = server
    root = tmp_path / "data"
    resources = [dataclasses.replace(r, url=f"{url}/{r.target}") for r in frost_photos.RESOURCES]
    original = frost_photos.RESOURCES
    frost_photos.RESOURCES = tuple(resources)
    try:
        frost_photos.fetch_missing(root)  # the server has none: a warning, no files
        assert not (root / "frost").exists()
        assert frost_photos.provenance(root)["frost"].startswith("procedural texture")
        (served / "frost").mkdir()
        for name in frost_photos.FILES:
            cv2.imwrite(str(served / "frost" / name), np.full((300, 300, 3), 200, np.uint8))
        frost_photos.fetch_missing(root)
    finally:
        frost_photos.RESOURCES = original
    assert frost_photos.find(root) is not None
    assert set(frost_photos.provenance(root).values()) == {"no published checksum"}
