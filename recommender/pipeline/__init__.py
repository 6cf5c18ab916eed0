"""The offline pipeline: a catalog read (catalog; parquet by row group: parquet), embedded by an engine (engines:
the contract and the in-process engine; ray_engine: on Ray workers), kept, skipped and checkpointed by one build
(build, checkpoint), and published to the Hub (publish). Nothing here runs in the app but provision's first-start
build of a small index."""

from importlib import import_module

# each public name -> its module, imported when the name is first used: importing one module of the
# package (a test, a script) does not import the others' heavy libraries (Gradio, Ray, TensorFlow)
_MODULES = {
    "BuildFailed": "build", "BuildSummary": "build", "Catalog": "catalog", "Checkpoint": "checkpoint",
    "EmbeddedRow": "engines", "Engine": "engines", "InProcessEngine": "engines", "Known": "engines",
    "ParquetLayout": "parquet", "Piece": "parquet", "Product": "catalog", "Progress": "checkpoint",
    "PublishFailed": "publish", "RayEngine": "ray_engine", "RowGroup": "parquet", "build_index": "build",
    "hub_limits": "publish", "load_catalog": "catalog", "pack": "publish", "parquet_files": "parquet",
    "pieces": "parquet", "publish": "publish", "read_products": "parquet", "row_groups": "parquet",
    "unpack": "publish", "write_index": "build",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
