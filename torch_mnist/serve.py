"""A page to draw a digit on, and the HTTP API behind it, on the standard library's threading server.

``POST /predict`` takes a PNG (any image) and answers with the digit, the top 3
and the 28x28 input the model saw, preprocessed exactly as predict.py does
(:mod:`.digits`): one code path, on the server.
"""

import base64
import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import List, Optional

import numpy as np
from PIL import Image

from .digits import BlankImage, preprocess_image
from .errors import UserError
from .predict import Probabilities, top_three

MAX_BODY_BYTES = 1_000_000  # a 280 px canvas PNG is ~5-20 kB


class DigitReader:
    """A model ready to read digit images; safe to call from many threads at once.

    ``probabilities`` is any model's (a checkpoint's through torch, an ONNX file's through onnxruntime).
    """

    def __init__(self, probabilities: Probabilities, class_names: List[str]):
        self.probabilities, self.class_names = probabilities, class_names
        self._lock = threading.Lock()  # one forward pass at a time: torch's CPU kernels use every core already

    def read(self, image: bytes) -> dict:
        """The JSON answer for one image: the prediction, or ``{"blank": true}``; UserError if unreadable."""
        try:
            pixels = preprocess_image(image)
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


def page() -> bytes:
    """The drawing page: one self-contained HTML file (CSS and JavaScript inline, nothing fetched)."""
    return resources.files("torch_mnist").joinpath("web/index.html").read_bytes()


def make_server(reader: DigitReader, host: str = "127.0.0.1", port: int = 8000,
                max_body: int = MAX_BODY_BYTES) -> ThreadingHTTPServer:
    """A server for ``reader`` (``port=0``: any free port; see ``server.server_address``)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a drawing sends a request every 150 ms

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page(), "text/html; charset=utf-8")
            elif self.path == "/health":
                self._json(HTTPStatus.OK, {"status": "ok"})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {self.path}"})

        def do_POST(self):
            if self.path != "/predict":
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path}"})
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "send the image with a Content-Length"})
                return
            if int(length) > max_body:
                self.close_connection = True  # the rest of the body is never read
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           {"error": f"the image is {int(length):,} bytes; the limit is {max_body:,}"})
                return
            body = self.rfile.read(int(length))
            try:
                self._json(HTTPStatus.OK, reader.read(body))
            except UserError as e:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})

        def _json(self, status: HTTPStatus, answer: dict) -> None:
            self._send(status, json.dumps(answer).encode(), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # quiet: a drawing makes several requests a second
            pass

    return _Server((host, port), Handler)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: socketserver's 5 resets connections when many arrive at once


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def serve_until_interrupted(server: ThreadingHTTPServer, announce: Optional[str] = None) -> None:
    if announce:
        print(announce, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
