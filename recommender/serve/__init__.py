"""Serving: the search object (search), query photos held in memory and read once (uploads, photos, data_urls), the
page's handlers (page), the API's endpoints (api), what they write (outputs), steering by example (feedback,
steering), the live camera (live: its handlers, live_turns: its model's turns, live_model: the model), explanations
(explain), fairness between visitors (clients), the index followed while the app runs (refresh, provision), and
every change to Gradio's own behaviour (gradio_patches)."""

from importlib import import_module

# each public name -> its module, imported when the name is first used: importing one module of the
# package (a test, a script) does not import the others' heavy libraries (Gradio, Ray, TensorFlow)
_MODULES = {
    "CLIENT_EVENTS": "clients", "CLIENT_STREAMS": "clients", "ENV": "environment", "Environment": "environment",
    "Explainer": "explain", "Explanation": "explain", "InMemoryUploads": "uploads", "IndexHolder": "refresh",
    "IndexUnusable": "provision", "LIVE_FORGET_SECONDS": "live", "LIVE_MAX_WAIT": "live_turns",
    "LIVE_MIN_CHANGE": "live", "LIVE_MODEL_SHARE": "live_turns", "LIVE_THUMBNAIL": "live", "LastFrames": "live",
    "LiveMatch": "live", "LiveModel": "live_model", "LiveModelFailed": "live_model", "LiveOutputs": "outputs",
    "LiveSearch": "live", "LiveState": "live", "LiveTurns": "live_turns", "MAX_DATA_URL_BYTES": "data_urls",
    "MAX_K": "search", "MAX_MARKS": "steering", "METHODS": "feedback", "Marks": "steering",
    "NothingToRefine": "feedback", "Page": "page", "PageOutputs": "outputs", "Photo": "photos",
    "PhotoOutputs": "outputs", "Product": "page", "QueryPhotos": "photos", "ROCCHIO": "feedback",
    "Recommender": "search", "RefuseDeepLinks": "gradio_patches", "Result": "search", "SEND_SIDE": "picker",
    "SERVER_PATH_REFUSED": "gradio_patches", "STEER_CSS": "steering", "TooManyUploads": "uploads",
    "UnknownProduct": "search", "UploadStore": "uploads", "VectorCache": "photos", "View": "explain",
    "WhyOutputs": "outputs", "api_endpoint": "api", "build_limit": "provision", "cell_boxes": "explain",
    "client_address": "clients", "contributions": "explain", "data_url": "data_urls",
    "delete_mcp_copies": "gradio_patches", "download_index": "provision", "drop_from_gradio_lists": "gradio_patches",
    "ensure_index": "provision", "fetch_photo": "photos", "follow_repo": "refresh", "from_data_url": "data_urls",
    "gallery": "outputs", "id_list": "gradio_patches", "in_memory_image": "gradio_patches",
    "limit_events_per_client": "clients", "links": "outputs", "live_camera": "gradio_patches",
    "marks_in_link": "steering", "marks_sent": "steering", "never_record_values": "gradio_patches",
    "overlay": "explain", "photo_key": "uploads", "photo_picker": "picker", "product_ids": "steering",
    "proxy_hops": "clients", "query_embedder": "explain", "query_image": "photos", "query_picture": "explain",
    "records": "outputs", "refined_query": "feedback", "refuse_server_paths_clearly": "gradio_patches",
    "serve_clients_in_turn": "clients", "share_query": "steering", "slow_refusal": "clients",
    "status_line": "outputs", "steer_bar": "steering", "steer_view": "steering", "update_from_repo": "refresh",
    "with_current_index": "page",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
