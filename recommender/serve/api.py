"""The API's endpoints as Gradio reads them: each filter of the index's catalog a named parameter of its own."""

from __future__ import annotations

import inspect

from recommender.serve.search import ANY, Recommender

__all__ = ["api_endpoint"]


def api_endpoint(method, index: Recommender):
    """Page.recommend, Page.similar or Page.refine (leading parameters, k, then the values of the filters) as a function whose
    signature names each filter of the index's catalog, default "All", and whose docstring describes it: Gradio names
    the API's parameters from the signature, and describes the MCP tools from the docstring."""
    filters = list(index.filters.values())
    leading = [p for p in inspect.signature(method).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    named = [inspect.Parameter(f["parameter"], inspect.Parameter.POSITIONAL_OR_KEYWORD, default=ANY, annotation=str)
             for f in filters]

    def endpoint(*values):
        return method(*values)

    lines = []
    for f in filters:
        known = ", ".join(f'"{value}"' for value in index.filter_choices(f["parameter"])[:2])
        lines.append(f'{f["parameter"]}: only products whose {f["label"].lower()} is this (e.g. {known}), '
                     f'or "{ANY}".')
    endpoint.__signature__ = inspect.Signature([*leading, *named])
    endpoint.__name__ = endpoint.__qualname__ = method.__name__
    endpoint.__doc__ = method.__doc__.replace("{filters}", "\n            ".join(lines)).replace(
        "            \n", "")
    return endpoint
