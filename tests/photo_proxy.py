"""A stand-in for the internet's photo hosts: the app fetches "http://photos.hf.co/..." through this proxy (Gradio's
SSRF check is skipped for *.hf.co hosts, and the app's download honours HTTP_PROXY), so a URL's picture is whatever
the test serves, and nothing leaves the machine."""

from __future__ import annotations

import http.server
import threading
import time


class PhotoProxy:
    """A plain-HTTP proxy on 127.0.0.1 that answers every absolute URL ("GET http://photos.hf.co/a.jpg") itself,
    with `pictures[url]` (404 without), once `held[url]` (a threading.Event), if any, is set, or with an endless body
    for a URL in `endless` (`sent` counts its bytes); `requests` lists the URLs asked for."""

    def __init__(self):
        self.pictures, self.held, self.requests, self.endless, self.sent = {}, {}, [], {}, {}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                proxy.requests.append(self.path)
                if self.path in proxy.held:
                    proxy.held[self.path].wait(60)
                if self.path in proxy.endless:  # 64 kB every `endless[path]` seconds, for as long as it is read
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.end_headers()
                    try:
                        while True:
                            self.wfile.write(b"\xff" * 65536)
                            proxy.sent[self.path] = proxy.sent.get(self.path, 0) + 65536
                            time.sleep(proxy.endless[self.path])
                    except OSError:  # the app hung up
                        return
                body = proxy.pictures.get(self.path)
                if body is None:
                    return self.send_error(404)
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def app_env(self) -> dict:
        """What makes the app fetch photo URLs through this proxy (and nothing local)."""
        return {**{name: self.url for name in ("HTTP_PROXY", "http_proxy")},
                **{name: "127.0.0.1,localhost" for name in ("NO_PROXY", "no_proxy")}}
