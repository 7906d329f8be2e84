"""The drawing page and its API: answers, errors, load, and a real browser drawing digits."""

import base64
import http.client
import io
import json
import math
import os
import shutil
import statistics
import threading
import time
from functools import partial
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from torch_mnist import TrainConfig, run_training
from torch_mnist.checkpoint import build_model, checkpoint_normalization, load_checkpoint
from torch_mnist.commands.serve import main as serve_main
from torch_mnist.digits import preprocess_image
from torch_mnist.engine import predict_probabilities
from torch_mnist.serve import DigitReader, is_loopback, make_server

from conftest import REPO, assert_one_line_error_in_process

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"  # screenshots a person can look at after the run


def _reader(checkpoint_path) -> DigitReader:
    checkpoint = load_checkpoint(checkpoint_path)
    return DigitReader(partial(predict_probabilities, build_model(checkpoint), checkpoint_normalization(checkpoint)),
                       [str(d) for d in range(10)])


@pytest.fixture(scope="module")
def synthetic_reader(tmp_path_factory):
    from conftest import make_synthetic_root
    folder = tmp_path_factory.mktemp("served")
    run_training(TrainConfig(epochs=1), make_synthetic_root(folder / "data"), torch.device("cpu"), folder / "c.pt")
    return _reader(folder / "c.pt")


class Running:
    """A server on a free local port, in a thread, shut down on exit."""

    def __init__(self, reader, **options):
        self.server = make_server(reader, "127.0.0.1", 0, **options)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def request(self, method, path, body=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type"), response.read()
        finally:
            connection.close()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _digit(block: int) -> np.ndarray:
    """A synthetic digit of the kind the synthetic model learned: class k lights its own 6x6 block."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    row, col = 3 + 7 * (block // 4), 3 + 6 * (block % 4)
    pixels[row:row + 6, col:col + 6] = 230
    return pixels


class TestApi:
    def test_page_and_health(self, synthetic_reader):
        with Running(synthetic_reader) as server:
            status, kind, body = server.request("GET", "/")
            assert status == 200 and kind.startswith("text/html") and b"<canvas" in body
            assert b"http" not in body.replace(b"http://www.w3.org", b"")  # nothing fetched from elsewhere
            assert server.request("GET", "/health")[::2] == (200, b'{"status": "ok"}')

    def test_an_image_is_read_as_predict_py_reads_it(self, synthetic_reader, tmp_path):
        image = _png(_digit(0))
        with Running(synthetic_reader) as server:
            status, kind, body = server.request("POST", "/predict", image, {"Content-Type": "image/png"})
        answer = json.loads(body)
        assert status == 200 and kind == "application/json"
        assert set(answer) == {"prediction", "class_name", "top3", "input"}
        assert [digit for digit, _ in answer["top3"]][0] == answer["prediction"] and len(answer["top3"]) == 3
        seen = Image.open(io.BytesIO(base64.b64decode(answer["input"].split(",", 1)[1])))
        assert np.array_equal(np.asarray(seen), preprocess_image(image))  # the same preprocessing, one path

    @pytest.mark.parametrize("body, status, answer", [
        (_png(np.zeros((280, 280), dtype=np.uint8) + 255), 200, {"blank": True}),
        (b"\x89PNG but not really", 400, {"error": "image: not a readable image (UnidentifiedImageError)"}),
        (b"", 400, {"error": "image: not a readable image (UnidentifiedImageError)"}),
    ])
    def test_blank_and_garbled_images(self, synthetic_reader, body, status, answer):
        with Running(synthetic_reader) as server:
            got_status, kind, got = server.request("POST", "/predict", body)
        assert (got_status, kind, json.loads(got)) == (status, "application/json", answer)

    def test_a_body_over_the_limit_is_refused_unread(self, synthetic_reader):
        with Running(synthetic_reader, max_body=1000) as server:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            connection.putrequest("POST", "/predict")
            connection.putheader("Content-Length", "50000000")  # announced, never sent: the server must not wait
            connection.endheaders()
            connection.send(b"x" * 100)
            response = connection.getresponse()
            assert response.status == 413
            assert json.loads(response.read()) == {"error": "the image is 50,000,000 bytes; the limit is 1,000"}
            connection.close()

    @pytest.mark.parametrize("method, path", [("GET", "/nope"), ("POST", "/elsewhere"), ("GET", "/predict")])
    def test_unknown_paths(self, synthetic_reader, method, path):
        with Running(synthetic_reader) as server:
            status, kind, body = server.request(method, path, b"" if method == "POST" else None)
        assert status == 404 and kind == "application/json" and "error" in json.loads(body)

    def test_only_loopback_is_private(self):
        assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
        assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")

    @pytest.mark.parametrize("flags, message", [
        (["--port", "70000"], "--port must be from 0 to 65535"),
        (["--max-body", "0"], "--max-body must be a positive number of bytes"),
        (["--checkpoint", "/nonexistent/ckpt.pt"], "no such checkpoint file"),
    ])
    def test_bad_flags_are_one_line(self, flags, message, capsys):
        assert_one_line_error_in_process(serve_main, flags, capsys, message)


@pytest.mark.slow
def test_fifty_clients_at_once_are_all_answered_correctly(synthetic_reader):
    images = [_png(_digit(k % 10)) for k in range(20)]
    expected = [json.loads(json.dumps(synthetic_reader.read(image)))["prediction"] for image in images]
    latencies, wrong = [], []
    with Running(synthetic_reader) as server:
        def client(_):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)  # kept alive
            for image, prediction in zip(images, expected):
                start = time.perf_counter()
                connection.request("POST", "/predict", body=image)
                response = connection.getresponse()
                answer = json.loads(response.read())
                latencies.append(time.perf_counter() - start)
                if response.status != 200 or answer["prediction"] != prediction:
                    wrong.append(answer)
            connection.close()

        with ThreadPoolExecutor(max_workers=50) as pool:
            list(pool.map(client, range(50)))
    assert len(latencies) == 1000 and wrong == []
    latencies.sort()
    print(f"\n1000 requests from 50 clients: p50 {1000 * statistics.median(latencies):.1f} ms, "
          f"p95 {1000 * latencies[949]:.1f} ms")


# Pen paths on the 280 px pad, as a person would draw each digit.
PEN_PATHS = {
    "1": [[(150, 50), (140, 230)]],
    "7": [[(80, 60), (200, 60), (120, 230)]],
    "0": [[(140 + 55 * math.sin(t / 20 * 2 * math.pi), 140 - 85 * math.cos(t / 20 * 2 * math.pi))
           for t in range(21)]],
    "4": [[(170, 50), (90, 160), (200, 160)], [(170, 100), (170, 235)]],
}


@pytest.mark.slow
def test_a_person_draws_digits_in_a_real_browser(trained_checkpoint):
    playwright = pytest.importorskip("playwright.sync_api", reason="the web extra is not installed")
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with Running(_reader(trained_checkpoint)) as server, playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 720, "height": 470})
            page.goto(f"http://127.0.0.1:{server.port}/")
            pad = page.locator("#pad").bounding_box()
            for digit, strokes in PEN_PATHS.items():
                page.click("#clear")
                assert page.text_content("#digit") == ""
                for stroke in strokes:
                    page.mouse.move(pad["x"] + stroke[0][0], pad["y"] + stroke[0][1])
                    page.mouse.down()
                    for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
                        for k in range(1, 11):  # a pen moves continuously: pointer events all the way
                            page.mouse.move(pad["x"] + x0 + (x1 - x0) * k / 10, pad["y"] + y0 + (y1 - y0) * k / 10)
                    page.mouse.up()
                # the answer to the whole drawing, not to a stroke of it
                page.wait_for_function("document.body.dataset.busy === 'no'", timeout=20000)
                assert page.text_content("#digit") == digit
                assert page.locator("#top3 .bar").count() == 3
                assert page.get_attribute("#seen", "src").startswith("data:image/png;base64,")
                page.screenshot(path=str(ARTIFACTS / f"serve-drawn-{digit}.png"))
            page.click("#clear")
            assert page.text_content("#digit") == "" and page.get_attribute("#seen", "src") is None
        finally:
            browser.close()
