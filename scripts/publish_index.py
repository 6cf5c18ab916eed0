"""Publish an index folder to a Hub dataset repo as a handful of files (thumbnails packed into tar shards), for
INDEX_REPO downloads.

    hf auth login                                                     # once, as a user who may write to the repo
    python scripts/publish_index.py index <you>/fashion-index         # upload it (one commit)
    python scripts/publish_index.py index <you>/fashion-index --dry-run   # list what would go up: path, bytes
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from recommender.index import IndexUnusable, read_manifest  # noqa: E402
from recommender.pipeline.publish import PublishFailed, hub_limits, pack, publish  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index_dir", type=Path, help="the index folder, as scripts/build_index.py wrote it")
    parser.add_argument("repo_id", help="Hub dataset repo, <user or org>/<name>; created if missing")
    parser.add_argument("--dry-run", action="store_true",
                        help="upload nothing; print each file that would go up: its path in the repo, its bytes")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing one is kept)")
    args = parser.parse_args(argv)

    try:
        count = read_manifest(args.index_dir)["count"]
        # the shards go beside the index (same disk, which has room for an index) and are removed after
        with tempfile.TemporaryDirectory(prefix=".publish-", dir=args.index_dir.resolve().parent) as work:
            files = pack(args.index_dir, Path(work))
            total, folder, entries = hub_limits([path for path, _ in files])
            size = sum(local.stat().st_size for _, local in files)
            if args.dry_run:
                for path, local in files:
                    print(path, local.stat().st_size)
            else:
                url = publish(files, args.repo_id, f"Index of {count} products ({total} files)",
                              private=args.private or None)
    except (IndexUnusable, PublishFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    # the summary goes to stderr: with --dry-run, stdout holds exactly one line per file
    print(f"{total} files, {size / 1e6:.1f} MB, at most {entries} entries in a folder ('{folder}'): "
          + ("nothing uploaded (--dry-run)." if args.dry_run else f"published as {url}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
