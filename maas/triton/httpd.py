"""What the local endpoint's two HTTP servers share (the SageMaker front and the stand-in):
127.0.0.1 only, a thread per connection, quiet, keep-alive with exact Content-Lengths."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm on, the body waits for
    # the client's delayed ACK on every keep-alive request.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LocalServer:
    """A ThreadingHTTPServer on a free port of 127.0.0.1, served from a daemon thread."""

    def __init__(self):
        self.url: str | None = None
        self._httpd: ThreadingHTTPServer | None = None

    def serve(self, handler: type[Handler], name: str) -> str:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.request_queue_size = 128
        threading.Thread(target=self._httpd.serve_forever, name=name, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    close = stop
