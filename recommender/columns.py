"""Which column of a catalog table holds what (id, image, name, link, price, filters): checked when a catalog is read,
recorded in the index's manifest, and read back by the search and the API's parameters."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, replace

__all__ = ["CatalogUnavailable", "Columns", "DEFAULT_FILTERS", "METADATA_FIELDS"]

# The Hub dataset's metadata columns, in its own names: the default schema, and the fields of an image folder.
METADATA_FIELDS = ("gender", "masterCategory", "subCategory", "articleType", "baseColour",
                   "season", "year", "usage", "productDisplayName")
# The default schema's filters keep the API parameter names and labels they had before filters came from the index.
DEFAULT_FILTERS = {"gender": ("gender", "Gender"), "articleType": ("article_type", "Article type"),
                   "baseColour": ("colour", "Colour")}  # column -> (parameter, label)
RESULT_KEYS = ("id", "name", "link", "price", "distance", "similarity")  # what every result has besides its fields
NOT_PARAMETERS = {"image", "k", "id", "product_id", "api_name", "fn_index", "result_callbacks"}  # taken in the API
FLAGS = {"id": "--id-column", "image": "--image-column", "name": "--name-column", "link": "--link-column",
         "price": "--price-column"}




class CatalogUnavailable(RuntimeError):
    """The catalog could not be opened; the message says what failed and what to do."""


@dataclass(frozen=True)
class Columns:
    """Which column of a catalog table holds what, as clip-retrieval's --url_col/--caption_col say it; the defaults
    are the Hub dataset's schema. `resolve` checks them against a table's own columns, before any image is read,
    and fills in `fields`: every column but the id and the image, kept for each product under its own name."""
    id: str = "id"
    image: str = "image"
    name: str | None = None  # None: productDisplayName where the table has it, else results are named by id
    link: str | None = None  # the product's page in the shop
    price: str | None = None
    filters: tuple[str, ...] | None = None  # None: those of gender, articleType, baseColour the table has
    fields: tuple[str, ...] = ()

    @property
    def is_default(self) -> bool:
        return replace(self, fields=()) == Columns()

    def resolve(self, available: list[str], where: str) -> "Columns":
        """These columns checked against `available` (a table's, in its order); CatalogUnavailable names the
        columns that exist and the flag to use when one is missing."""
        available = list(available)
        wanted = [(FLAGS[role], getattr(self, role)) for role in FLAGS if getattr(self, role)]
        wanted += [("--filter-columns", name) for name in self.filters or ()]
        for flag, name in wanted:
            if name not in available:
                raise CatalogUnavailable(f"{where} has no column '{name}' ({flag}). Its columns are: "
                                         f"{', '.join(available) or 'none'}. Name the right one with {flag}.")
        name = self.name or ("productDisplayName" if "productDisplayName" in available else None)
        filters = self.filters if self.filters is not None else tuple(c for c in DEFAULT_FILTERS if c in available)
        fields = tuple(c for c in available if c not in (self.id, self.image))
        resolved = replace(self, name=name, filters=tuple(filters), fields=fields)
        roles = {"id": self.id, "name": name, "link": self.link, "price": self.price}
        for key in RESULT_KEYS:  # a column under a result key's name would be hidden by that key in every result
            if key in fields and roles.get(key) != key:
                role = f" (from {FLAGS[key]} {roles[key]})" if roles.get(key) else ""
                raise CatalogUnavailable(f"{where}: its column '{key}' would be hidden by each result's own "
                                         f"'{key}'{role}. Rename the column, or map it with {FLAGS.get(key, 'a flag')}.")
        try:
            resolved.filter_parameters()  # refuses names the API cannot take
        except CatalogUnavailable as error:
            raise CatalogUnavailable(f"{where}: {error}") from None
        return resolved

    def filter_parameters(self) -> list[dict]:
        """One API parameter per filter column: {"column", "parameter", "label"}. The default schema's columns keep
        their old parameters (gender, article_type, colour); another column's parameter is its name in lower
        case with every run of other characters than letters and digits made "_"."""
        parameters = []
        for column in self.filters or ():
            parameter, label = DEFAULT_FILTERS.get(column) or (
                re.sub(r"\W+", "_", column).strip("_").lower(), column.replace("_", " ").strip().capitalize())
            if not parameter.isidentifier() or keyword.iskeyword(parameter) or parameter in NOT_PARAMETERS or \
                    parameter in (p["parameter"] for p in parameters):
                raise CatalogUnavailable(
                    f"The filter column '{column}' cannot be an API parameter (as '{parameter}': "
                    f"{'taken' if parameter.isidentifier() else 'not a name'}). Rename the column: letters, digits "
                    f"and '_', starting with a letter, none of {', '.join(sorted(NOT_PARAMETERS))}.")
            parameters.append({"column": column, "parameter": parameter, "label": label})
        return parameters

    def to_manifest(self) -> dict:
        return {"id": self.id, "image": self.image, "name": self.name, "link": self.link, "price": self.price,
                "filters": self.filter_parameters(), "fields": list(self.fields)}

    @classmethod
    def from_manifest(cls, recorded: dict | None) -> "Columns":
        """The mapping an index was built with; an index built before mappings existed has the default schema."""
        if not recorded:
            return cls(name="productDisplayName", filters=tuple(DEFAULT_FILTERS), fields=METADATA_FIELDS)
        return cls(id=recorded["id"], image=recorded["image"], name=recorded["name"], link=recorded["link"],
                   price=recorded["price"], filters=tuple(f["column"] for f in recorded["filters"]),
                   fields=tuple(recorded["fields"]))
