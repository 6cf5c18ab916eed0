"""Generations of an index folder: a new index replaces a served one in one atomic step, and a generation is
removed only once no process holds it."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from recommender.index.files import IndexFiles, _record_verified

__all__ = ["adopt", "hold", "remove_unheld", "swap_into_place"]


def swap_into_place(built: Path, target: Path) -> None:
    """Make the complete index in `built` the one at `target`, in one atomic step: `built` becomes a generation
    folder, .<target>.generations/<time>, and `target` a symbolic link to it, replaced by a rename. A process that
    resolved `target` before keeps its generation for as long as it holds it (`hold`); generations no process holds
    are removed. `built` must just have been written or verified (the build, a download): its files' identities
    are recorded, so loading it needs no full checksum."""
    target = Path(target)
    adopt(target)  # an index folder from before generations becomes one first: _link would move it onto `built`
    generations = _generations(target)
    generations.mkdir(parents=True, exist_ok=True)
    generation = _new_generation(generations)
    with _held(generation):  # until the link points at it: a cleanup racing this swap must not take it first
        os.replace(built, generation)
        _record_verified(IndexFiles(generation))
        _link(target, generation)
    remove_unheld(target)


def adopt(target: Path) -> Path:
    """The generation folder `target` serves, turning an index folder from before generations into one (so that a
    later swap cannot move its files under a reader)."""
    target = Path(target)
    generations = _generations(target)
    # a folder to adopt, or none because another process is moving it into a generation now: wait for that one
    if not target.is_symlink() and (target.is_dir() or generations.is_dir()):
        generations.mkdir(parents=True, exist_ok=True)
        with open(generations / ".adopt.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process at a time: two would each link a generation of their own
            if target.is_dir() and not target.is_symlink():  # not adopted by another process meanwhile
                generation = _new_generation(generations)
                with _held(generation):  # _link moves the folder there before it links it: not to be removed
                    _link(target, generation)
    return target.resolve()


def hold(generation: Path):
    """Keep `generation` from removal while the returned lock is open (close it to let go); None if it was removed
    meanwhile. A shared lock: any number of processes may hold one generation."""
    lock = open(generation.with_name(generation.name + ".lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_SH)  # waits while remove_unheld decides about this generation
    if generation.is_dir():
        return lock
    lock.close()
    return None


def remove_unheld(target: Path) -> None:
    """Remove the generations of `target` that are not current and that no process holds."""
    target = Path(target)
    generations = _generations(target)
    if not generations.is_dir():
        return
    for path in generations.iterdir():
        if not path.is_dir():
            continue
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # an app still answers from it, or may show its images, or a swap links it
                continue
            # Which one is current is read now, under the lock, not once before the loop: another process's swap
            # may have linked this one since. No swap can link it from here on: a swap holds its generation
            # (_held) from before the folder exists until the link points at it.
            if path.resolve() == target.resolve():  # both absolute: `target` may be relative, as INDEX_DIR's default
                continue
            shutil.rmtree(path, ignore_errors=True)
            for extra in (".verified.json", ".lock"):
                path.with_name(path.name + extra).unlink(missing_ok=True)


@contextmanager
def _held(generation: Path):
    """A shared lock on `generation`, as `hold` takes, but taken before the folder exists (its name is new)."""
    with open(generation.with_name(generation.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield


def _generations(target: Path) -> Path:
    return target.with_name(f".{target.name}.generations")


def _new_generation(generations: Path) -> Path:
    return generations / f"{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}"


def _link(target: Path, generation: Path) -> None:
    """Point `target` at `generation`; an index folder in the way (from before generations) becomes `generation`."""
    if target.is_dir() and not target.is_symlink():
        os.replace(target, generation)  # the one moment `target` is missing: once, on the first swap
    link = target.with_name(f".{target.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(generation, target.parent), link)  # relative: the parent folder may move
    os.replace(link, target)


