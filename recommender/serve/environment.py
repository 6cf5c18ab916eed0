"""Every setting the app reads from the environment, read here once: its variable, its default and why. The README's
Configuration table lists them for a Space's settings."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ENV", "Environment"]


@dataclass(frozen=True)
class Environment:
    index_dir: str = "index"  # INDEX_DIR: the index folder (or the link to its current generation)
    index_repo: str | None = None  # INDEX_REPO: a Hub dataset repo to download the index from, and follow
    weights: str | None = None  # WEIGHTS: unset, whatever the index was built with
    dataset: str | None = None  # DATASET: the catalog a first start builds from (None: config.DEFAULT_DATASET)
    build_limit: str = "2000"  # BUILD_LIMIT: products a first start indexes, or "all" (provision.build_limit)
    app_title: str = "Find similar fashion products"  # APP_TITLE: a shop's own catalog, its own words
    app_description: str = ("Choose a photo, take one with your camera, or paste one; drag on it to frame the garment "
                            "if there is more in the picture. Or go **Live** and point the camera at a product.")
    max_queue: int = 64  # MAX_QUEUE: more waiting requests are refused at once ("queue is full")
    # MAX_EVENTS_PER_CLIENT: a page's click on a result runs two events ("more like this" and "Why this match?"),
    # and a filter changed while a search runs one more; raise it where many people share one address (an office
    # behind one NAT, a load test)
    max_events_per_client: int = 3
    max_streams_per_client: int = 1  # MAX_STREAMS_PER_CLIENT: live streams (each holds a slot for minutes)
    refusal_seconds: float = 1.0  # REFUSAL_SECONDS: a refusal's wait (clients.slow_refusal)
    # TRUSTED_PROXY_HOPS: proxies in front whose X-Forwarded-For entries are trusted; one on a Space (SPACE_ID is
    # set there), none elsewhere
    trusted_proxy_hops: int = 0
    url_photo_seconds: float = 1.5  # URL_PHOTO_SECONDS: a photo's URL delivers it within this, or is refused
    # INDEX_GRACE_SECONDS: a replaced index is kept this long for the pages showing its images (a slow phone, a
    # reloaded tab)
    index_grace_seconds: float = 300.0
    index_repo_check_minutes: float = 10.0  # INDEX_REPO_CHECK_MINUTES: one small Hub API call each; 0: never

    @classmethod
    def read(cls, environ=os.environ) -> "Environment":
        defaults = cls()
        hops = environ.get("TRUSTED_PROXY_HOPS", "1" if environ.get("SPACE_ID") else "0")
        return cls(
            index_dir=environ.get("INDEX_DIR", defaults.index_dir),
            index_repo=environ.get("INDEX_REPO") or None,
            weights=environ.get("WEIGHTS") or None,
            dataset=environ.get("DATASET") or None,
            build_limit=environ.get("BUILD_LIMIT", defaults.build_limit),
            app_title=environ.get("APP_TITLE", defaults.app_title),
            app_description=environ.get("APP_DESCRIPTION", defaults.app_description),
            max_queue=int(environ.get("MAX_QUEUE", defaults.max_queue)),
            max_events_per_client=int(environ.get("MAX_EVENTS_PER_CLIENT", defaults.max_events_per_client)),
            max_streams_per_client=int(environ.get("MAX_STREAMS_PER_CLIENT", defaults.max_streams_per_client)),
            refusal_seconds=float(environ.get("REFUSAL_SECONDS", defaults.refusal_seconds)),
            trusted_proxy_hops=int(hops),
            url_photo_seconds=float(environ.get("URL_PHOTO_SECONDS", defaults.url_photo_seconds)),
            index_grace_seconds=float(environ.get("INDEX_GRACE_SECONDS", defaults.index_grace_seconds)),
            index_repo_check_minutes=float(environ.get("INDEX_REPO_CHECK_MINUTES",
                                                       defaults.index_repo_check_minutes)))


ENV = Environment.read()  # at import: the app's process reads its environment once
