"""Publishing an index to the Hub and restoring it with INDEX_REPO's download: a handful of files within the Hub's
limits, the same index back, and a damaged or incomplete download refused before it replaces anything."""

import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import QUIET_ENV, ROOT
from recommender.pipeline import publish
from recommender.index import IndexUnusable
from recommender.serve.provision import download_index
from recommender.pipeline.publish import MAX_FILES, MAX_FOLDER_ENTRIES, PACKING

SCRIPT = ROOT / "scripts" / "publish_index.py"
spec = importlib.util.spec_from_file_location("publish_index", SCRIPT)
publish_index = importlib.util.module_from_spec(spec)
spec.loader.exec_module(publish_index)


class LocalHub:
    """The Hub's side of publishing and downloading, played by a folder: what HfApi's create_repo, list_repo_files
    and create_commit and huggingface_hub.snapshot_download do to a dataset repo. The packing, upload operations,
    unpacking, verification and swap around them are the real code."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(exist_ok=True)

    def __call__(self):  # HfApi()
        return self

    def create_repo(self, repo_id, repo_type, exist_ok, private=None):
        assert repo_type == "dataset" and exist_ok

    def list_repo_files(self, repo_id, repo_type):
        return [path.relative_to(self.root).as_posix() for path in self.root.rglob("*") if path.is_file()]

    def create_commit(self, repo_id, operations, commit_message, repo_type):
        from huggingface_hub import CommitOperationDelete

        for operation in operations:
            target = self.root / operation.path_in_repo
            if isinstance(operation, CommitOperationDelete):
                target.unlink()
                if not any(target.parent.iterdir()) and target.parent != self.root:
                    target.parent.rmdir()  # a git repository holds no empty folder
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(operation.path_or_fileobj, target)
        return SimpleNamespace(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/local")

    def snapshot_download(self, repo_id, repo_type, revision, local_dir):
        shutil.copytree(self.root, local_dir, dirs_exist_ok=True)
        (Path(local_dir) / ".cache").mkdir(exist_ok=True)  # huggingface_hub's bookkeeping, which the download drops


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub

    local = LocalHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", local)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", local.snapshot_download)
    return local


def files_of(index: Path) -> dict[str, str]:
    return {path.relative_to(index).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(index.rglob("*")) if path.is_file()}


@pytest.mark.fast
def test_a_published_index_downloads_as_the_same_index(stand_in_index, hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(publish, "SHARD_ROWS", 10)  # 37 thumbnails: 4 shards to restore, as a large index has
    index = stand_in_index
    (hub.root / "images").mkdir()
    (hub.root / "images" / "0000000.jpg").write_bytes(b"left by an earlier upload of the plain folder")
    assert publish_index.main([str(index), "someone/fashion-index"]) == 0
    assert "published as https://huggingface.co/datasets/someone/fashion-index" in capsys.readouterr().err
    assert not (hub.root / "images").exists()  # the commit removed what the publication does not hold
    own_files = {path.name for path in index.iterdir() if path.is_file()}  # manifest.json, vectors.npy, ...
    shards = {f"thumbnails/0000{n}.tar" for n in range(4)}
    assert set(hub.list_repo_files("someone/fashion-index", "dataset")) == own_files | shards | {PACKING}
    assert not list(index.parent.glob(".publish-*"))  # the shards' work folder is gone

    download_index("someone/fashion-index", tmp_path / "served")
    assert files_of(tmp_path / "served") == files_of(index)  # every file and thumbnail, byte for byte
    assert not (tmp_path / ".served.download").exists()


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _foreign_member(hub_root: Path) -> None:
    """A shard that holds a path out of the index, with packing.json's checksum made to match it."""
    shard = hub_root / "thumbnails" / "00000.tar"
    with tarfile.open(shard, "w") as tar:
        member = tarfile.TarInfo("../../outside.jpg")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"bad"))
    packing = json.loads((hub_root / PACKING).read_text())
    packing["shards"][0].update(bytes=shard.stat().st_size, sha256=hashlib.sha256(shard.read_bytes()).hexdigest())
    (hub_root / PACKING).write_text(json.dumps(packing))


DAMAGE = {
    "a damaged shard": (lambda hub: _flip_a_byte(hub / "thumbnails" / "00000.tar"), "does not match its size"),
    "a missing shard": (lambda hub: (hub / "thumbnails" / "00000.tar").unlink(), "incomplete: shard"),
    "a missing vectors.npy": (lambda hub: (hub / "vectors.npy").unlink(), "incomplete: vectors.npy missing"),
    "a damaged vectors.npy": (lambda hub: _flip_a_byte(hub / "vectors.npy"), "vectors.npy does not match"),
    "a cut packing.json": (lambda hub: (hub / PACKING).write_text('{"shards": ['), "packing.json is not readable"),
    "a shard holding a foreign path": (_foreign_member, "not a thumbnail"),
}


@pytest.mark.fast
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_or_incomplete_download_replaces_nothing(stand_in_index, hub, tmp_path, damage):
    assert publish_index.main([str(stand_in_index), "someone/fashion-index"]) == 0
    served = tmp_path / "served"
    shutil.copytree(stand_in_index, served)
    before = files_of(served)
    harm, message = DAMAGE[damage]
    harm(hub.root)
    with pytest.raises(IndexUnusable, match=message) as refused:
        download_index("someone/fashion-index", served)
    refusal = str(refused.value)
    assert "was refused" in refusal and ("re-download" in refusal or "download it again" in refusal)
    assert files_of(served) == before  # the served index is untouched
    assert not (tmp_path / ".served.download").exists() and not (tmp_path / "outside.jpg").exists()


def synthetic_index(root: Path, count: int) -> Path:
    """An index of `count` products written by the build's own writer, with small synthetic vectors and one tiny
    JPEG as every thumbnail: the files a 44k index has, in seconds."""
    from recommender.pipeline.build import write_index
    from recommender.config import Settings
    from recommender.index import IndexFiles

    files = IndexFiles(root)
    files.images.mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 40)).save(root / "thumbnail.jpg", format="JPEG")
    for row in range(count):
        os.link(root / "thumbnail.jpg", files.image(row))  # a folder entry each, written once
    (root / "thumbnail.jpg").unlink()
    vectors = np.random.default_rng(0).standard_normal((count, 8), dtype=np.float32)
    embedder = SimpleNamespace(identity={"model": "synthetic", "dims": 8}, size=32,
                               embed=lambda pixels: np.zeros((len(pixels), 8), np.float32))
    write_index(files, vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
                [{"id": str(row)} for row in range(count)], embedder, Settings(trees=1, coarse_dims=4),
                {"kind": "synthetic"}, {})
    return root


def test_a_44k_index_publishes_as_a_handful_of_files_within_the_hub_limits(hub, tmp_path, capsys):
    index = synthetic_index(tmp_path / "index", 44_000)
    assert publish_index.main([str(index), "someone/big-index", "--dry-run"]) == 0
    printed = capsys.readouterr()
    listed = dict(line.rsplit(" ", 1) for line in printed.out.splitlines())  # path in the repo -> bytes
    print(printed.err)  # e.g. "14 files, 72.1 MB, at most 10 entries in a folder ('.')"
    own_files = {path.name for path in index.iterdir() if path.is_file()}  # manifest.json, vectors.npy, ...
    assert set(listed) == own_files | {PACKING} | {f"thumbnails/0000{n}.tar" for n in range(5)}  # 5 shards of 10k
    assert int(listed["vectors.npy"]) == (index / "vectors.npy").stat().st_size
    folders = {"root": len(own_files) + 2, "thumbnails": 5}  # the root also holds packing.json and thumbnails/
    assert len(listed) < MAX_FILES and max(folders.values()) < MAX_FOLDER_ENTRIES
    assert f"{len(listed)} files" in printed.err and "nothing uploaded" in printed.err
    assert not hub.list_repo_files("someone/big-index", "dataset")  # a dry run uploads nothing
    assert not list(tmp_path.glob(".publish-*"))


@pytest.mark.fast
def test_a_failed_upload_says_what_failed_and_what_to_do(stand_in_index, offline):
    """The real upload, which this machine cannot make: the Hub is out of reach (conftest's refusing proxy)."""
    result = subprocess.run([sys.executable, str(SCRIPT), str(stand_in_index), "someone/fashion-index"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, **QUIET_ENV})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Could not create or find the Hub dataset repo 'someone/fashion-index'" in result.stderr
    assert "hf auth login" in result.stderr and "The repo is unchanged" in result.stderr
    assert any("huggingface.co" in request for request in offline.requests)  # it tried, and was refused
