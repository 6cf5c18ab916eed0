"""Serving: the search object (search), query photos held in memory and read once (uploads, photos), the page's
and the API's handlers (page), the live camera (live_model), explanations (explain), fairness between visitors
(clients), the index followed while the app runs (refresh, provision), and every change to Gradio's own
behaviour (gradio_patches)."""

from importlib import import_module

# each public name -> its module, imported when the name is first used: importing one module of the
# package (a test, a script) does not import the others' heavy libraries (Gradio, Ray, TensorFlow)
_MODULES = {
    "CLIENT_EVENTS": "clients", "CLIENT_STREAMS": "clients", "Explainer": "explain", "Explanation": "explain",
    "InMemoryUploads": "uploads", "METHODS": "feedback", "NothingToRefine": "feedback", "ROCCHIO": "feedback",
    "refined_query": "feedback", "IndexHolder": "refresh", "IndexUnusable": "provision", "LiveMatch": "page",
    "LiveModel": "live_model", "LiveModelFailed": "live_model", "LiveState": "page", "MAX_K": "search",
    "Page": "page", "Photo": "photos", "Product": "page", "QueryPhotos": "photos", "Recommender": "search",
    "RefuseDeepLinks": "gradio_patches", "Result": "search", "SEND_SIDE": "picker",
    "SERVER_PATH_REFUSED": "gradio_patches", "TooManyUploads": "uploads", "UnknownProduct": "search",
    "UploadStore": "uploads", "VectorCache": "photos", "View": "explain", "build_limit": "provision",
    "cell_boxes": "explain", "client_address": "clients", "contributions": "explain",
    "delete_mcp_copies": "gradio_patches", "download_index": "provision", "drop_from_gradio_lists": "gradio_patches",
    "ensure_index": "provision", "fetch_photo": "photos", "follow_repo": "refresh", "in_memory_image": "page",
    "limit_events_per_client": "clients", "live_camera": "page", "never_record_values": "gradio_patches",
    "overlay": "explain", "photo_key": "uploads", "photo_picker": "picker", "proxy_hops": "clients",
    "query_embedder": "explain", "query_image": "photos", "query_picture": "explain",
    "refuse_server_paths_clearly": "gradio_patches", "serve_clients_in_turn": "clients", "slow_refusal": "clients",
    "update_from_repo": "refresh",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
