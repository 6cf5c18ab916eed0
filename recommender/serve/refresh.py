"""A new index without a restart: the app answers from the generation it holds, moves to a new one (a rebuild, a
download) between requests, and lets the old one go only after its gallery files may no longer be asked for."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

from recommender.index import IndexUnusable, adopt, hold, remove_unheld
from recommender.serve.environment import ENV
from recommender.serve.search import Recommender

__all__ = ["IndexHolder", "follow_repo", "update_from_repo"]

# A page asks for its gallery's images as soon as it shows them; minutes cover a slow phone and a reloaded tab.
GRACE_SECONDS = ENV.index_grace_seconds
CHECK_SECONDS = 1.0  # between looks at the index link (one readlink): a new index serves within about a second
REPO_CHECK_MINUTES = ENV.index_repo_check_minutes  # one small Hub API call each; 0: never


class IndexHolder:
    """The Recommender of the index at `index_dir` (a link to its current generation), kept current by `watch`.
    Read `current` once per request and use only that: a request never mixes two indexes."""

    def __init__(self, index_dir: Path, weights: str | None = None, grace: float = GRACE_SECONDS):
        self.index_dir, self.weights, self.grace = Path(index_dir), weights, grace
        self.on_switch = []  # callables given each new Recommender (the app allows its images to be served)
        self._retired = []  # (monotonic time after which it may go, lock) of generations served before
        self._refused = None  # a generation that could not be loaded: not retried every second
        try:
            self.generation = adopt(self.index_dir)
        except OSError:  # a read-only folder: served as it is, never replaced under the app
            self.generation = self.index_dir.resolve()
        self._lock = hold(self.generation) if self.generation.parent.name.endswith(".generations") else None
        self.current = Recommender.load(self.generation, weights=weights)

    def check(self) -> bool:
        """One look at the index link: load the generation it points to, if new, and serve it from now on."""
        generation = self.index_dir.resolve()
        if generation in (self.generation, self._refused) or not generation.parent.name.endswith(".generations"):
            return False
        lock = hold(generation)
        if lock is None:  # replaced again before it could be held: the next look finds the newest
            return False
        try:
            recommender = Recommender.load(generation, weights=self.weights, embedder=self.current.embedder)
            if list(recommender.filters) != list(self.current.filters):  # the page's dropdowns, the API's parameters
                raise IndexUnusable(f"its filters ({', '.join(recommender.filters) or 'none'}) are not the served "
                                    f"index's ({', '.join(self.current.filters) or 'none'}): restart the app for it.")
        except (IndexUnusable, OSError) as error:
            lock.close()
            self._refused = generation
            print(f"Still serving {self.generation.name}: the new index at {self.index_dir} is refused: {error}",
                  flush=True)
            return False
        for callback in self.on_switch:
            callback(recommender)
        if self._lock is not None:
            self._retired.append((time.monotonic() + self.grace, self._lock))
        self.current, self.generation, self._lock = recommender, generation, lock
        gc.freeze()  # the new index's objects (a million ids at 1M products) out of the collector's walks (app.py)
        print(f"Serving the index {generation.name} ({recommender.manifest['count']:,} products).", flush=True)
        return True

    def release_expired(self) -> None:
        """Let go of generations retired longer than the grace period ago, and remove those nobody holds."""
        now, kept = time.monotonic(), []
        for deadline, lock in self._retired:
            if deadline <= now:
                lock.close()
            else:
                kept.append((deadline, lock))
        if len(kept) < len(self._retired):
            self._retired = kept
            remove_unheld(self.index_dir)

    def watch(self) -> threading.Thread:
        """Check for a new index every CHECK_SECONDS in a daemon thread."""
        def loop():
            while True:
                time.sleep(CHECK_SECONDS)
                try:
                    self.check()
                    self.release_expired()
                except Exception as error:  # a disk error must not end the watching: the old index still serves
                    print(f"Index refresh: {type(error).__name__}: {error}", flush=True)

        thread = threading.Thread(target=loop, name="index-refresh", daemon=True)
        thread.start()
        return thread


def update_from_repo(repo_id: str, index_dir: Path, latest=None, download=None) -> bool:
    """One look at the Hub repo `repo_id`: download its newest revision into `index_dir` (a new generation, which an
    IndexHolder then serves) unless it is the one already there. The revision downloaded is remembered beside the
    index (.<name>.revision). True if it downloaded."""
    from recommender.serve.provision import download_index

    index_dir = Path(index_dir)
    remembered = index_dir.with_name(f".{index_dir.name}.revision")
    revision = latest() if latest else _latest_revision(repo_id)
    if remembered.exists() and remembered.read_text() == revision:
        return False
    (download or download_index)(repo_id, index_dir, revision=revision)
    remembered.write_text(revision)
    return True


def follow_repo(repo_id: str, index_dir: Path, downloaded_now: bool, minutes: float = REPO_CHECK_MINUTES):
    """Check `repo_id` for a new revision every `minutes` in a daemon thread. `downloaded_now`: the index was just
    downloaded at start, so the revision found first is taken for the one served (not downloaded twice)."""
    if minutes <= 0:
        return None
    index_dir = Path(index_dir)

    def loop():
        if downloaded_now:
            try:
                index_dir.with_name(f".{index_dir.name}.revision").write_text(_latest_revision(repo_id))
            except Exception as error:
                print(f"INDEX_REPO: could not read the revision of {repo_id}: {error}", flush=True)
        while True:
            time.sleep(minutes * 60)
            try:
                update_from_repo(repo_id, index_dir)
            except Exception as error:  # the Hub unreachable, a damaged upload: the index in place keeps serving
                print(f"INDEX_REPO: no new index from {repo_id}: {error}", flush=True)

    thread = threading.Thread(target=loop, name="index-repo", daemon=True)
    thread.start()
    return thread


def _latest_revision(repo_id: str) -> str:
    from huggingface_hub import HfApi

    return HfApi().dataset_info(repo_id).sha
