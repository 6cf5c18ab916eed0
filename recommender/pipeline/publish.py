"""An index as a handful of files for the Hub (which takes fewer than 10k entries per folder and 100k files per repo):
the thumbnails packed into tar shards, the other files as they are; and back: shards unpacked into images/."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from collections import defaultdict
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from recommender.index import IndexFiles, IndexUnusable, read_manifest, sha256

__all__ = ["PublishFailed", "hub_limits", "pack", "publish", "unpack"]

SHARD_ROWS = 10_000  # thumbnails per shard: ~100 MB of 256-px JPEGs; 1M products give 100 shards
PACKING = "packing.json"  # which shards hold the thumbnails, with the size and sha256 of each
SHARDS = "thumbnails"  # the shards' folder in the repo
THUMBNAIL = re.compile(r"\d{7}\.jpg")  # IndexFiles.image's names: the only members a shard may hold
MAX_FOLDER_ENTRIES, MAX_FILES = 10_000, 100_000  # the Hub's limits: each must stay below


class PublishFailed(RuntimeError):
    """The index could not be published; the message says what failed and what to do."""


def pack(index_dir: Path, into: Path) -> list[tuple[str, Path]]:
    """The files of a publication of the (verified) index at `index_dir`: [(path in the repo, local file)]. The index's
    own files are taken as they are; the thumbnails go into tar shards written in `into`, and `packing.json` lists
    them. Shards are reproducible (no dates or owners), so publishing the same index again uploads nothing new."""
    root = Path(index_dir).resolve()  # one generation's files, even if a rebuild swaps another in meanwhile
    read_manifest(root)  # never publish a damaged index
    files = IndexFiles(root)
    published = [(path.name, path) for path in (files.manifest, *files.checked, *files.optional) if path.exists()]
    thumbnails = sorted(files.images.glob("*.jpg"))
    (into / SHARDS).mkdir(parents=True, exist_ok=True)
    shards = []
    starts = range(0, len(thumbnails), SHARD_ROWS)
    for number, start in enumerate(tqdm(starts, desc="Packing thumbnails", unit="shard", leave=False)):
        name = f"{SHARDS}/{number:05d}.tar"
        _write_shard(into / name, thumbnails[start:start + SHARD_ROWS])
        shards.append({"path": name, "thumbnails": len(thumbnails[start:start + SHARD_ROWS]),
                       "bytes": (into / name).stat().st_size, "sha256": sha256(into / name)})
        published.append((name, into / name))
    (into / PACKING).write_text(json.dumps({"format": "tar", "unpack_to": "images", "shards": shards}, indent=1))
    published.append((PACKING, into / PACKING))
    hub_limits([path for path, _ in published])
    return published


def _write_shard(path: Path, thumbnails: list[Path]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for thumbnail in thumbnails:
            data = thumbnail.read_bytes()
            member = tarfile.TarInfo(thumbnail.name)  # mtime 0, owner root: same thumbnails, same bytes
            member.size, member.mode = len(data), 0o644
            tar.addfile(member, io.BytesIO(data))


def hub_limits(paths: list[str]) -> tuple[int, str, int]:
    """(files, the fullest folder, its entries) of a repo holding `paths`; PublishFailed if over the Hub's limits."""
    children = defaultdict(set)  # folder -> the names of its files and sub-folders
    for path in map(PurePosixPath, paths):
        for child in (path, *list(path.parents)[:-1]):  # the file, then each folder above it but the root
            children[child.parent.as_posix()].add(child.name)
    folder, largest = max(((folder, len(names)) for folder, names in children.items()), key=lambda item: item[1])
    if len(paths) >= MAX_FILES or largest >= MAX_FOLDER_ENTRIES:
        raise PublishFailed(f"A publication of {len(paths)} files, {largest} of them in '{folder}', is over the Hub's "
                            f"limits (fewer than {MAX_FILES} files, {MAX_FOLDER_ENTRIES} per folder).")
    return len(paths), folder, largest


def publish(files: list[tuple[str, Path]], repo_id: str, message: str, private: bool | None = None) -> str:
    """Upload a publication (`pack`'s list) to the Hub dataset repo `repo_id` in one commit, which also removes the
    files an earlier publication left (old shards, a plain images/ folder); returns the commit's URL."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi()
    step = f"create or find the Hub dataset repo '{repo_id}'"
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
        step = f"list the files of the Hub dataset repo '{repo_id}'"
        stale = set(api.list_repo_files(repo_id, repo_type="dataset")) - {path for path, _ in files}
        stale.discard(".gitattributes")  # the Hub's own: which files are stored as large files
        operations = [*(CommitOperationDelete(path) for path in sorted(stale)),
                      *(CommitOperationAdd(path, str(local)) for path, local in files)]
        step = f"upload the index to the Hub dataset repo '{repo_id}'"
        return api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset").commit_url
    except Exception as error:
        raise PublishFailed(
            f"Could not {step} ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else 'no detail'}).\nThe repo is unchanged (a commit "
            "is all or nothing). Fix: log in with `hf auth login` (or set HF_TOKEN) as a user who may write to "
            f"'{repo_id}', check the repo id and the network, then run the same command again."
        ) from None


def unpack(folder: Path) -> None:
    """Turn a downloaded publication in `folder` back into an index folder, in place: check each shard against
    packing.json, extract its thumbnails into images/, delete it. A folder without packing.json (an index uploaded
    as a plain folder) is left as it is. IndexUnusable if a shard is missing, damaged or holds anything but
    thumbnails; read_manifest then checks the index as a whole."""
    folder = Path(folder)
    if not (folder / PACKING).is_file():
        return
    fix = "publish the index again (python scripts/publish_index.py) or download it again."
    try:
        shards = json.loads((folder / PACKING).read_text())["shards"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise IndexUnusable(f"{PACKING} is not readable ({error}): " + fix) from None
    images = IndexFiles(folder).images
    images.mkdir(exist_ok=True)
    for shard in tqdm(shards, desc="Unpacking thumbnails", unit="shard", leave=False):
        path = folder / shard["path"]
        if not re.fullmatch(rf"{SHARDS}/\d{{5}}\.tar", shard["path"]) or not path.is_file():
            raise IndexUnusable(f"The download is incomplete: shard {shard['path']} is missing. " + fix)
        if path.stat().st_size != shard["bytes"] or sha256(path) != shard["sha256"]:
            raise IndexUnusable(f"Shard {shard['path']} does not match its size and checksum in {PACKING}: " + fix)
        with tarfile.open(path) as tar:
            for member in tar:  # extracted by hand: no path from the archive is ever trusted
                if not member.isfile() or not THUMBNAIL.fullmatch(member.name):
                    raise IndexUnusable(f"Shard {shard['path']} holds {member.name!r}, not a thumbnail: " + fix)
                (images / member.name).write_bytes(tar.extractfile(member).read())
        path.unlink()
    shutil.rmtree(folder / SHARDS)  # anything else a repo held there is no part of the index
    (folder / PACKING).unlink()
