"""A page to draw a digit on, and the HTTP API behind it, on the standard library's threading server.

``POST /predict`` takes a PNG (any image) and answers with the digit, the top 3
and the 28x28 input the model saw, preprocessed exactly as predict.py does
(:mod:`.digits`): one code path, on the server.
"""

import base64
import io
import json
import sys
import threading
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import List, Optional

import numpy as np
from PIL import Image

from ..inference.digits import BlankImage, preprocess_image
from ..errors import UserError
from ..inference.predict import Probabilities, top_three

MAX_BODY_BYTES = 1_000_000  # a 280 px canvas PNG is ~5-20 kB


class DigitReader:
    """A model ready to read digit images; safe to call from many threads at once.

    ``probabilities`` is any model's (a checkpoint's through torch, an ONNX file's through onnxruntime).
    """

    def __init__(self, probabilities: Probabilities, class_names: List[str], description: str = "a model"):
        self.probabilities, self.class_names = probabilities, class_names
        self.description = description  # which model reads the page's digits, shown on it
        self._lock = threading.Lock()  # one forward pass at a time: torch's CPU kernels use every core already

    def read(self, image: bytes) -> dict:
        """The JSON answer for one image: the prediction, or ``{"blank": true}``; UserError if unreadable."""
        try:
            pixels = preprocess_image(image, max_pixels=MAX_PIXELS)
        except BlankImage:
            return {"blank": True}
        with self._lock:
            top3 = top_three(self.probabilities(pixels[None])[0])
        return {"prediction": top3[0][0], "class_name": self.class_names[top3[0][0]], "top3": top3,
                "input": _png_data_url(pixels)}


def _png_data_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def page(description: str = "a model") -> bytes:
    """The drawing page: one self-contained HTML file (CSS and JavaScript inline, nothing fetched), naming the
    model that reads it."""
    html = resources.files("torch_mnist").joinpath("web/index.html").read_text(encoding="utf-8")
    return html.replace("{{model}}", escape(description)).encode()


READ_TIMEOUT_SECONDS = 10.0  # a connection whose request or body stalls this long is dropped
MAX_CONNECTIONS = 256  # connections served at once; beyond, a 503 at once (stalled uploads cannot starve others)
MAX_DECODES = 2  # images decoded at once: each may take ~100 MB at MAX_PIXELS
MAX_PIXELS = 4_000_000  # a drawing is a few hundred pixels a side; a 2000x2000 image is already generous
DRAIN_BYTES = 16_000_000  # an oversized body is read (and dropped) up to this, so that the client hears the 413
DRAIN_PAUSE_SECONDS = 0.5  # ... while it keeps arriving: a pause this long ends the draining
ALLOWED = "GET, HEAD, POST, OPTIONS"


def make_server(reader: DigitReader, host: str = "127.0.0.1", port: int = 8000, max_body: int = MAX_BODY_BYTES,
                timeout: float = READ_TIMEOUT_SECONDS, max_connections: int = MAX_CONNECTIONS) -> "_Server":
    """A server for ``reader`` (``port=0``: any free port; see ``server.server_address``)."""
    decodes = threading.BoundedSemaphore(MAX_DECODES)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a drawing sends a request every 150 ms

        def setup(self):
            self.timeout = timeout  # applied to the socket by StreamRequestHandler.setup
            super().setup()

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page(reader.description), "text/html; charset=utf-8")
            elif self.path == "/health":
                self._json(HTTPStatus.OK, {"status": "ok"})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {self.path}"})

        def do_HEAD(self):
            self.do_GET()  # _send writes no body for HEAD

        def do_OPTIONS(self):
            self.send_response(HTTPStatus.NO_CONTENT)
            self.send_header("Allow", ALLOWED)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            if self.path != "/predict":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
                return
            length = _byte_count(self.headers.get("Content-Length"))
            if length is None:
                self.close_connection = True  # where its body ends is unknown
                self._json(HTTPStatus.LENGTH_REQUIRED if "Content-Length" not in self.headers
                           else HTTPStatus.BAD_REQUEST, {"error": "send the image with a Content-Length in bytes"})
                return
            if length > max_body:
                self._drain(length)
                self.close_connection = True
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           {"error": f"the image is {length:,} bytes; the limit is {max_body:,}"})
                return
            body = self.rfile.read(length)
            if len(body) < length:  # the client went away mid-body: nobody to answer
                self.close_connection = True
                return
            with decodes:  # bounded memory: a few decodes at a time, each of a bounded size
                try:
                    self._json(HTTPStatus.OK, reader.read(body))
                except UserError as e:
                    self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})

        def _drain(self, length: int) -> None:
            """Read what the client is sending (up to a bound, while it keeps coming) and drop it: a client that
            sends its whole body before reading, as most do, then reads the answer instead of a reset."""
            left = min(length, DRAIN_BYTES)
            self.connection.settimeout(DRAIN_PAUSE_SECONDS)
            try:
                while left > 0:
                    chunk = self.rfile.read1(min(left, 65536))
                    if not chunk:
                        return
                    left -= len(chunk)
            except (TimeoutError, ConnectionError):
                pass  # it stopped sending (or announced more than it sends): answer now

        def send_error(self, code, message=None, explain=None):
            """The standard library's own errors (400, 414, 431, 501...) in the API's JSON, not its HTML."""
            self.close_connection = True
            if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):  # unparsable: HTTP/0.9 would mean no headers
                self.request_version = "HTTP/1.1"
            try:
                phrase = HTTPStatus(code).phrase
            except ValueError:
                phrase = "error"
            self._json(code, {"error": message or phrase})

        def _json(self, status, answer: dict) -> None:
            self._send(status, json.dumps(answer).encode(), "application/json")

        def _send(self, status, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format, *args):  # quiet: a drawing makes several requests a second
            pass

    server = _Server((host, port), Handler)
    server.slots = threading.BoundedSemaphore(max_connections)
    return server


def _byte_count(header: Optional[str]) -> Optional[int]:
    """A Content-Length as bytes: ASCII digits only (int() would take '²' or ' 12'); None if not one."""
    if header is None or not header.isascii() or not header.isdigit():
        return None
    return int(header) if len(header) <= 18 else 10 ** 18  # 5,000 nines is simply too large


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: socketserver's 5 resets connections when many arrive at once
    slots: threading.BoundedSemaphore

    def process_request(self, request, client_address):
        """A thread per connection, up to the bound; beyond it, a 503 in JSON and the connection closed."""
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                body = json.dumps({"error": "the server is busy; try again"}).encode()
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        """A client that disconnects or stalls is no error of ours: nothing logged. Anything else, one line."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        print(f"error: a request from {client_address[0]} failed: {type(error).__name__}: {error}", file=sys.stderr)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def serve_until_interrupted(server: ThreadingHTTPServer, announce: Optional[str] = None) -> None:
    if announce:
        print(announce, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
