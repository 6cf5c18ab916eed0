"""Build the search index from a fashion catalog.

    python scripts/build_index.py                                   # all ~44k products of the Hub dataset
    python scripts/build_index.py --dataset my.parquet --limit 500  # a local parquet in the same schema
    python scripts/build_index.py --dataset photos/ --out my-index  # a folder of images (sub-folder = type)
    python scripts/build_index.py --dataset products.csv --id-column sku --image-column photo --name-column title \
        --link-column url --price-column price --filter-columns category,colour   # a shop's own table
    python scripts/build_index.py --dataset data/ --engine ray      # embed on Ray (RAY_ADDRESS: a cluster's)
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from recommender.pipeline.build import BuildFailed, build_index  # noqa: E402
from recommender.columns import CatalogUnavailable, Columns  # noqa: E402
from recommender.pipeline.catalog import load_catalog
from recommender.config import DEFAULT_DATASET, Settings  # noqa: E402
from recommender.embedder import WeightsUnavailable  # noqa: E402


def main(argv=None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help="Hub dataset id, parquet file(s), a CSV or JSON Lines file, or an image folder")
    defaults_columns = Columns()
    tables = parser.add_argument_group("a table's columns (CSV, JSON Lines, parquet, Hub dataset)",
                                       "default: the Hub dataset's schema. Every other column is kept and returned "
                                       "with each result under its own name.")
    tables.add_argument("--id-column", default=defaults_columns.id, help="the product's id (default: id)")
    tables.add_argument("--image-column", default=defaults_columns.image,
                        help="the image: a file path, relative to the table's folder or absolute, or image data "
                             "(default: image)")
    tables.add_argument("--name-column", default=None, help="the product's name (default: productDisplayName if "
                                                            "present, else the id)")
    tables.add_argument("--link-column", default=None, help="the product's page in the shop (http or https)")
    tables.add_argument("--price-column", default=None, help="the price, shown as it is written")
    tables.add_argument("--filter-columns", default=None,
                        help="comma-separated columns offered as filters, one dropdown and API parameter each "
                             "(default: gender, articleType, baseColour, those present; '' for none)")
    parser.add_argument("--split", default="train", help="split of a Hub dataset")
    parser.add_argument("--revision", default=None, help="Hub dataset revision (default: the latest)")
    parser.add_argument("--limit", type=int, default=None, help="index only the first N products")
    parser.add_argument("--out", default="index", help="index folder, replaced only once the new index is complete")
    parser.add_argument("--weights", default=defaults.weights, help="'imagenet', a Keras weights file, or 'random'")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of --weights random")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="model input side in pixels")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call")
    parser.add_argument("--precision", choices=["float32", "bf16"], default=defaults.precision,
                        help="bf16: faster embedding on some CPUs with AVX512-BF16 or AMX, slower on others "
                             "(3.7x on an Intel Xeon with AMX, 1.8x on an AMD EPYC, 0.6x on an Intel Xeon with "
                             "AVX512-BF16 but no AMX: "
                             "scripts/bench.py measures yours); the app then computes queries in bf16 too")
    parser.add_argument("--trees", type=int, default=defaults.trees, help="Annoy trees")
    parser.add_argument("--coarse-dims", type=int, default=defaults.coarse_dims,
                        help="principal components Annoy searches before the exact re-ranking")
    parser.add_argument("--no-reuse", action="store_true",
                        help="embed every image, even those whose vectors the index at --out already holds")
    parser.add_argument("--engine", choices=["in-process", "ray"], default="in-process",
                        help="where images are embedded: this process, or Ray workers (pip install -r "
                             "requirements-ray.txt; a parquet catalog; RAY_ADDRESS picks the cluster)")
    parser.add_argument("--workers", type=int, default=None,
                        help="with --engine ray: model copies (default: the cluster's CPUs / --worker-cpus)")
    parser.add_argument("--worker-cpus", type=float, default=1.0,
                        help="with --engine ray: CPUs (and TensorFlow threads) per worker")
    args = parser.parse_args(argv)
    if args.image_size < 32:
        parser.error("--image-size must be at least 32 (ResNet50 downsamples by 32)")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")

    settings = Settings(weights=args.weights, seed=args.seed, image_size=args.image_size, trees=args.trees,
                        coarse_dims=args.coarse_dims, precision=args.precision)
    filters = None if args.filter_columns is None else tuple(c.strip() for c in args.filter_columns.split(",")
                                                             if c.strip())
    columns = Columns(id=args.id_column, image=args.image_column, name=args.name_column, link=args.link_column,
                      price=args.price_column, filters=filters)
    try:
        catalog = load_catalog(args.dataset, split=args.split, limit=args.limit, revision=args.revision,
                               columns=columns)
        engine = _engine(args, catalog)
        summary = build_index(catalog, settings, Path(args.out), batch_size=args.batch_size, reuse=not args.no_reuse,
                              engine=engine)
    except (CatalogUnavailable, WeightsUnavailable, BuildFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary)
    return 0


def _engine(args, catalog):
    if args.engine == "in-process":
        return None
    try:
        import ray  # noqa: F401  (checked here, imported for real only by the engine)
    except ImportError:
        raise BuildFailed("--engine ray needs Ray: pip install -r requirements-ray.txt") from None
    from recommender.pipeline.ray_engine import RayEngine

    engine = RayEngine(workers=args.workers, worker_cpus=args.worker_cpus)
    engine.check(catalog)  # before the model loads: a catalog Ray cannot split is refused at once
    return engine


if __name__ == "__main__":
    sys.exit(main())
