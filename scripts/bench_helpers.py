"""What scripts/bench.py's benchmarks share: the report and its targets, timing, fresh photos. Import it before
numpy: it gives numpy one BLAS thread, as the app does."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BLAS_DEFAULT = os.environ.get("OPENBLAS_NUM_THREADS")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as app.py does: numpy's BLAS threads slow the model down

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package, and the synthetic catalog and app runner of the tests

from synthetic_catalog import many_products  # noqa: E402


class Report:
    """Sections of figures, and targets with what was measured against them. A `gate` target is robust on a
    noisy machine (a recall, a ratio of two rates measured side by side, a count of errors): missing it fails the
    run. The others are timings, which a busy machine can miss: they are printed, not enforced."""

    def __init__(self, command: str):
        self.command, self.sections, self.targets = command, {}, []
        self.started = time.perf_counter()

    def add(self, section: str, measure: str, figure: str) -> None:
        self.sections.setdefault(section, []).append((measure, figure))
        print(f"{section} | {measure} | {figure}", flush=True)

    def target(self, name: str, measured: str, wanted: str, met: bool, gate: bool = False) -> None:
        self.targets.append((name, measured, wanted, bool(met), gate))
        print(f"target | {name} | {measured} | {wanted} | {'met' if met else 'NOT MET'}", flush=True)

    def merge(self, other: dict) -> None:
        """Add the sections and targets of a child process's report (`as_dict`)."""
        for section, rows in other["sections"].items():
            for row in rows:
                self.add(section, *row)
        self.targets += [tuple(target) for target in other["targets"]]

    def as_dict(self) -> dict:
        return {"sections": self.sections, "targets": self.targets}

    def missed(self, gate: bool) -> list[str]:
        return [f"{name}: {measured}, wanted {wanted}" for name, measured, wanted, met, is_gate in self.targets
                if not met and is_gate == gate]

    def markdown(self, machine_name: str) -> str:
        lines = ["# Benchmarks", "", f"`{self.command}` on {machine_name}, {time.strftime('%Y-%m-%d')}, "
                 f"{(time.perf_counter() - self.started) / 60:.1f} minutes. ResNet50 at 224x224 with random weights "
                 "(the same cost as ImageNet's). Rerun the command to reproduce; timings vary from run to run, far "
                 "more on a busy machine, so each comparison is made within one run.", "",
                 "## Targets", "",
                 "A missed target marked *checked* fails the command (and CI); the others are timings, which a busy "
                 "machine can miss, and are only reported.", "",
                 "| target | measured | wanted | | |", "| --- | --- | --- | --- | --- |",
                 *[f"| {name} | {measured} | {wanted} | {'met' if met else '**not met**'} | "
                   f"{'checked' if gate else 'timing'} |" for name, measured, wanted, met, gate in self.targets], ""]
        for section, rows in self.sections.items():
            lines += [f"## {section}", "", "| measure | figure |", "| --- | --- |",
                      *[f"| {measure} | {figure} |" for measure, figure in rows], ""]
        return "\n".join(lines + [GENERATOR_NOTE, ""])


GENERATOR_NOTE = """## The synthetic vectors

`resnet_like_features` (tests/synthetic_catalog.py) draws vectors shaped like ResNet50's global-max-pooled
features: 50 cluster centres and a per-point spread of half their scale, both with a power-law decaying scale per
dimension (1 / i^0.7, so a few directions carry most of the variance, as in real CNN features), dimensions
shuffled, then ReLU (non-negative, many zeros) and L2 normalisation. The share of their variance that the first
256 principal components hold is measured above ("Index: recall and speed"). Queries are fresh draws from the same
distribution, not catalog rows."""


def machine() -> str:
    cpu = platform.processor()
    flags = set()
    if Path("/proc/cpuinfo").exists():
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
        flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    bf16 = ", ".join(flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags) or "no bf16 instructions"
    return f"{cpu} ({bf16}), {os.cpu_count()} cores, Python {platform.python_version()}"


def timed(function, *args):
    """(function(*args), its wall time in ms)"""
    started = time.perf_counter()
    value = function(*args)
    return value, (time.perf_counter() - started) * 1000


def percentiles(samples_ms) -> tuple[float, float]:
    return statistics.median(samples_ms), float(np.percentile(samples_ms, 95))


def p50_p95(samples_ms) -> str:
    return "p50 {:.1f} ms, p95 {:.1f} ms".format(*percentiles(samples_ms))


@dataclass
class Photos:
    """Product photos unlike the catalog's, as JPEG files, none handed out twice: the app reuses the vector of a
    photo sent again, so a repeated photo would skip the model."""
    folder: Path
    taken: int = 0  # photos handed out so far

    def take(self, count: int) -> list[str]:
        self.folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for row in many_products(count, seed=1000 + self.taken):  # a seed per call: new colours and sizes
            paths.append(str(self.folder / f"{self.taken + len(paths)}.jpg"))
            row["image"].save(paths[-1], quality=90)
        self.taken += count
        return paths


def drop_page_cache() -> bool:
    """Empty the kernel's page cache, as after a reboot (needs root); False where that is not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def ask(client, api_name: str, path: str, k: int = 8):
    """One query through gradio_client: (its answer, ms)."""
    from gradio_client import handle_file

    extra = {"k": k} if api_name == "/recommend" else {}
    return timed(lambda: client.predict(image=handle_file(path), api_name=api_name, **extra))
