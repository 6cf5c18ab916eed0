"""The offline pipeline: a catalog read (catalog), embedded by an engine (in this process, or on Ray workers:
ray_engine), kept, skipped and checkpointed by one build (build, checkpoint), and published to the Hub
(publish). Nothing here runs in the app but provision's first-start build of a small index."""

from importlib import import_module

# each public name -> its module, imported when the name is first used: importing one module of the
# package (a test, a script) does not import the others' heavy libraries (Gradio, Ray, TensorFlow)
_MODULES = {
    "BuildFailed": "build", "BuildSummary": "build", "Catalog": "catalog", "Checkpoint": "checkpoint",
    "Product": "catalog", "Progress": "checkpoint", "PublishFailed": "publish", "RayEngine": "ray_engine",
    "build_index": "build", "hub_limits": "publish", "load_catalog": "catalog", "pack": "publish",
    "publish": "publish", "unpack": "publish", "write_index": "build",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
