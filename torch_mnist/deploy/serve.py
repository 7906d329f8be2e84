"""A page to draw a digit on, and the HTTP API behind it, on the standard library's threading server.

``POST /predict`` takes a PNG (any image) and answers with the digit, the top 3
and the 28x28 input the model saw, preprocessed exactly as predict.py does
(:mod:`.digits`): one code path, on the server.
"""

import base64
import io
import json
import sys
import socket
import threading
import time
from email import policy as email_policy
from email.parser import BytesParser
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Dict, List, Optional

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


READ_TIMEOUT_SECONDS = 10.0  # a connection whose request or body stalls this long is dropped ...
REQUEST_DEADLINE_SECONDS = 30.0  # ... and one whose request, trickling in, is not whole after this long
SLOT_WAIT_SECONDS = 1.0  # when full, how long a new connection waits for the slot a closed slow one frees
MAX_CONNECTIONS = 256  # connections served at once; beyond, a 503 at once (stalled uploads cannot starve others)
MAX_DECODES = 2  # images decoded at once: each may take ~100 MB at MAX_PIXELS
MAX_PIXELS = 4_000_000  # a drawing is a few hundred pixels a side; a 2000x2000 image is already generous
DRAIN_BYTES = 16_000_000  # an oversized body is read (and dropped) up to this, so that the client hears the 413
DRAIN_PAUSE_SECONDS = 0.5  # ... while it keeps arriving: a pause this long ends the draining
ALLOWED = "GET, HEAD, POST, OPTIONS"


def make_server(reader: DigitReader, host: str = "127.0.0.1", port: int = 8000, max_body: int = MAX_BODY_BYTES,
                timeout: float = READ_TIMEOUT_SECONDS, max_connections: int = MAX_CONNECTIONS) -> "_Server":
    """A server for ``reader`` (``port=0``: any free port; see ``server.server_address``)."""
    server = _Server((host, port), _Handler)
    server.reader, server.max_body, server.read_timeout = reader, max_body, timeout
    server.decodes = threading.BoundedSemaphore(MAX_DECODES)  # bounded memory: a few decodes at a time
    server.slots = threading.BoundedSemaphore(max_connections)
    server.request_deadline = REQUEST_DEADLINE_SECONDS if timeout == READ_TIMEOUT_SECONDS else 3 * timeout
    return server


class _Handler(BaseHTTPRequestHandler):
    """One connection's requests; what it serves and its limits are its server's (``self.server``)."""

    protocol_version = "HTTP/1.1"  # keep-alive: a drawing sends a request every 150 ms

    def setup(self):
        self.timeout = self.server.read_timeout  # applied to the socket by StreamRequestHandler.setup
        super().setup()

    def handle_one_request(self):
        self.server.reading(self.connection)  # from now until the request is whole: a slow client's time
        super().handle_one_request()

    def do_GET(self):
        self.server.answering(self.connection)
        if self.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, page(self.server.reader.description), "text/html; charset=utf-8")
        elif self.path == "/health":
            self._json(HTTPStatus.OK, {"status": "ok"})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {self.path}"})

    def do_HEAD(self):
        self.do_GET()  # _send writes no body for HEAD

    def do_OPTIONS(self):
        self.server.answering(self.connection)
        self.send_response(HTTPStatus.NO_CONTENT)
        self.send_header("Allow", ALLOWED)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        if self.path != "/predict":
            self.server.answering(self.connection)
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
            return
        length = _byte_count(self.headers.get("Content-Length"))
        if length is None:
            self.close_connection = True  # where its body ends is unknown
            self._json(HTTPStatus.LENGTH_REQUIRED if "Content-Length" not in self.headers
                       else HTTPStatus.BAD_REQUEST, {"error": "send the image with a Content-Length in bytes"})
            return
        if length > self.server.max_body:
            self.server.answering(self.connection)
            self._drain(length)
            self.close_connection = True
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       {"error": f"the image is {length:,} bytes; the limit is {self.server.max_body:,}"})
            return
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away mid-body: nobody to answer
            self.close_connection = True
            return
        self.server.answering(self.connection)
        with self.server.decodes:  # bounded memory: a few decodes at a time, each of a bounded size
            try:
                image = uploaded_file(self.headers.get("Content-Type"), body)
                self._json(HTTPStatus.OK, self.server.reader.read(image))
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


def _byte_count(header: Optional[str]) -> Optional[int]:
    """A Content-Length as bytes: ASCII digits only (int() would take '²' or ' 12'); None if not one."""
    if header is None or not header.isascii() or not header.isdigit():
        return None
    return int(header) if len(header) <= 18 else 10 ** 18  # 5,000 nines is simply too large


def uploaded_file(content_type: Optional[str], body: bytes) -> bytes:
    """The image in a request's body: the body itself, or a form's first file (multipart/form-data, as an
    HTML form or ``curl -F image=@digit.png`` sends it)."""
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        return body
    form = BytesParser(policy=email_policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body)
    parts = list(form.iter_parts()) if form.is_multipart() else []
    files = [part for part in parts if part.get_filename()] or parts
    if not files:
        raise UserError("the form holds no file; send the image as the body or as a form's file field")
    return files[0].get_payload(decode=True) or b""


class _Server(ThreadingHTTPServer):
    """The threading server with a bound on connections and on how long a request may take to arrive: a
    connection still sending its request when the server is full, or past REQUEST_DEADLINE_SECONDS, is
    closed, so that clients trickling bytes cannot hold the slots that prompt ones need."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: socketserver's 5 resets connections when many arrive at once
    # Set by make_server: what the handlers serve, and the limits they keep.
    reader: DigitReader
    max_body: int
    read_timeout: float
    decodes: threading.BoundedSemaphore
    slots: threading.BoundedSemaphore
    request_deadline: float = 0.0

    def server_activate(self):
        super().server_activate()
        self._receiving: Dict[socket.socket, float] = {}  # connection -> when its current request began
        self._lock = threading.Lock()

    def reading(self, connection: socket.socket) -> None:
        with self._lock:
            self._receiving[connection] = time.monotonic()

    def answering(self, connection: socket.socket) -> None:
        with self._lock:
            self._receiving.pop(connection, None)

    def _close_receiving(self, older_than: Optional[float] = None) -> bool:
        """Close the connection that has been receiving its request the longest (or every one older than
        ``older_than`` seconds); True if one was closed. Its thread then ends and frees its slot."""
        now = time.monotonic()
        with self._lock:
            if older_than is None:
                victims = [min(self._receiving, key=self._receiving.get)] if self._receiving else []
            else:
                victims = [c for c, since in self._receiving.items() if now - since > older_than]
            for connection in victims:
                self._receiving.pop(connection)
        for connection in victims:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return bool(victims)

    def service_actions(self):  # serve_forever calls this twice a second
        self._close_receiving(older_than=self.request_deadline)

    def process_request(self, request, client_address):
        """A thread per connection, up to the bound; when full, the slowest request still arriving makes room
        (a 503 in JSON, the connection closed, only when every connection is busy answering)."""
        if not self.slots.acquire(blocking=False) and not (
                self._close_receiving() and self.slots.acquire(timeout=SLOT_WAIT_SECONDS)):
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
            self.answering(request)
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
