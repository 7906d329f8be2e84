"""The drawing page and its API: answers, errors, load, and a real browser drawing digits."""

import base64
import http.client
import io
import json
import math
import os
import shutil
import socket
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
from torch_mnist.training.checkpoint import build_model, checkpoint_normalization, load_checkpoint
from torch_mnist.commands.serve import main as serve_main
from torch_mnist.inference.digits import preprocess_image
from torch_mnist.training.epoch import predict_probabilities
from torch_mnist.deploy.serve import DigitReader, is_loopback, make_server

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
        # A short poll, so that shutdown() returns in 50 ms rather than socketserver's 0.5 s.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

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

    def test_the_page_names_its_model_as_text(self, synthetic_reader):
        synthetic_reader.description = 'robust.pt: <script>alert("x")</script>'
        try:
            with Running(synthetic_reader) as server:
                body = server.request("GET", "/")[2]
        finally:
            synthetic_reader.description = "a model"
        assert b"Read by robust.pt: &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;." in body

    def test_describe_model(self):
        from torch_mnist.commands.serve import describe_model

        robust = TrainConfig(distort=("affine", "elastic", "pen"))
        assert describe_model("robust.pt", robust, 60) == (
            "robust.pt: a 784-512-10 MLP trained 60 epochs on digits distorted (affine, elastic, pen)")
        assert describe_model("ckpt.pt", TrainConfig(hidden=(512, 512)), 20) == (
            "ckpt.pt: a 784-512-512-10 MLP trained 20 epochs on MNIST's digits as they are")

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


class TestHostileClients:
    """Clients that lie about lengths, stall, disconnect or send what no drawing needs."""

    @pytest.mark.parametrize("length, status", [("²", 400), ("1 2", 400), ("-5", 400), ("9" * 5000, 413)])
    def test_a_content_length_that_is_no_byte_count(self, synthetic_reader, capsys, length, status):
        with Running(synthetic_reader) as server:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
                client.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
                answer = _read_answer(client)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and b"application/json" in answer
        assert "error" in json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert capsys.readouterr().err == ""  # no traceback in the server's log

    def test_clients_that_send_part_of_a_body_and_leave_log_nothing(self, synthetic_reader, capsys):
        rng = np.random.default_rng(0)
        with Running(synthetic_reader) as server:
            for k in range(100):
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
                    announced = int(rng.integers(100, 100000))
                    client.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {announced}\r\n\r\n"
                                   .encode() + b"\x89PNG" * int(rng.integers(0, announced // 8)))
            status, _, _ = server.request("GET", "/health")
        assert status == 200 and capsys.readouterr().err == ""

    def test_ordinary_clients_posting_too_much_read_the_413(self, synthetic_reader):
        import urllib.error
        import urllib.request
        with Running(synthetic_reader) as server:
            def post(_):
                request = urllib.request.Request(f"http://127.0.0.1:{server.port}/predict", data=b"x" * 3_000_000,
                                                 headers={"Content-Type": "image/png"})
                try:
                    urllib.request.urlopen(request, timeout=30)
                except urllib.error.HTTPError as e:
                    return e.code, json.loads(e.read())
                return None
            with ThreadPoolExecutor(10) as pool:
                answers = list(pool.map(post, range(10)))
        assert all(code == 413 and "limit" in answer["error"] for code, answer in answers), answers

    def test_stalled_uploads_are_dropped_and_do_not_block_others(self, synthetic_reader, capsys):
        stalled = []
        with Running(synthetic_reader, timeout=1.0, max_connections=64) as server:
            before = threading.active_count()
            for _ in range(200):  # more than the server serves at once: the rest are told it is busy
                client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n\x89PN")
                stalled.append(client)
            assert threading.active_count() - before <= 64  # threads bounded
            deadline = time.monotonic() + 15
            status = None
            while time.monotonic() < deadline:  # a good client is served once the stalled ones time out
                status, _, _ = server.request("GET", "/health")
                if status == 200:
                    break
            assert status == 200
            for client in stalled:  # every stalled upload was dropped (or refused as busy)
                answer = _read_answer(client)
                assert answer == b"" or answer.startswith(b"HTTP/1.1 503")
                client.close()
        assert capsys.readouterr().err == ""

    def test_an_image_of_too_many_pixels_is_refused_before_decoding(self, synthetic_reader):
        buffer = io.BytesIO()
        Image.new("L", (9000, 9000), 255).save(buffer, format="PNG")  # ~80 KB, 81 million pixels
        with Running(synthetic_reader) as server:
            started = time.monotonic()
            status, kind, body = server.request("POST", "/predict", buffer.getvalue())
        assert status == 400 and "9000x9000 pixels, more than the 4,000,000 accepted here" in json.loads(body)["error"]
        assert time.monotonic() - started < 5  # refused from the header, not after a decode

    @pytest.mark.parametrize("request_bytes, status", [
        (b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"OPTIONS /predict HTTP/1.1\r\nHost: x\r\n\r\n", 204),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n", 431),
        (b"DELETE /predict HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"NONSENSE\r\n\r\n", 400),
    ])
    def test_every_answer_is_json(self, synthetic_reader, request_bytes, status):
        with Running(synthetic_reader) as server:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
                client.sendall(request_bytes)
                answer = _read_answer(client, head_request=request_bytes.startswith(b"HEAD"))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode()) or head.startswith(f"HTTP/1.0 {status} ".encode())
        if status not in (204,) and not request_bytes.startswith(b"HEAD"):
            assert b"Content-Type: application/json" in head and "error" in json.loads(body)
        elif request_bytes.startswith(b"HEAD"):
            assert b"Content-Type: application/json" in head and body == b""


def _read_answer(client: socket.socket, head_request: bool = False) -> bytes:
    """The server's whole answer: its head and the Content-Length bytes of body after it (none for a HEAD
    request or a 204), or everything until it closes the connection; b"" if it closed without a word."""
    client.settimeout(10)
    answer = b""
    try:
        while not _complete(answer, head_request):
            chunk = client.recv(65536)
            if not chunk:
                break
            answer += chunk
    except ConnectionError:  # closed by a reset rather than a FIN
        pass
    except TimeoutError:
        raise AssertionError(f"the server neither finished its answer nor closed in 10 s: {answer[:200]!r}")
    return answer


def _complete(answer: bytes, head_request: bool) -> bool:
    head, separator, body = answer.partition(b"\r\n\r\n")
    if not separator:
        return False
    if head_request or head.split(b" ", 2)[1:2] == [b"204"]:
        return True
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n")[1:]
               if line.lower().startswith(b"content-length:")]
    return bool(lengths) and len(body) >= int(lengths[0])


class TestSlowClients:
    """Clients that trickle their requests in, a byte or a header line at a time, never stalling long enough
    for the per-read timeout: they may not hold the slots that prompt clients need."""

    def test_a_flood_of_tricklers_does_not_keep_prompt_clients_out(self, synthetic_reader, capsys):
        rng = np.random.default_rng(7)
        with Running(synthetic_reader, timeout=5.0, max_connections=16) as server:
            tricklers = []
            for k in range(40):  # more than the slots, each at its own pace
                client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
                tricklers.append(client)
            answers = []
            for round in range(6):  # prompt clients keep arriving while the tricklers keep trickling
                for client in tricklers:
                    try:
                        client.sendall(f"X-Slow-{round}: {int(rng.integers(0, 1000))}\r\n".encode())
                    except OSError:
                        pass  # closed by the server to make room: as it should
                answers.append(server.request("GET", "/health")[0])
                answers.append(server.request("POST", "/predict", body=_png(_digit(1)),
                                              headers={"Content-Type": "image/png"})[0])
                time.sleep(0.2)
            for client in tricklers:
                client.close()
        assert answers == [200] * len(answers), answers
        assert capsys.readouterr().err == ""

    def test_a_body_sent_a_byte_at_a_time_is_dropped_at_the_request_deadline(self, synthetic_reader):
        with Running(synthetic_reader, timeout=0.5) as server:  # the whole request's deadline: 1.5 s
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
                client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
                started, closed = time.monotonic(), False
                while time.monotonic() - started < 10 and not closed:
                    try:
                        client.sendall(b"\x89")
                        time.sleep(0.2)  # under the per-read timeout: only the deadline can end it
                        closed = client.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed = True
                assert closed and time.monotonic() - started < 5


class TestUploads:
    def test_a_multipart_form_upload_is_read_as_its_file(self, synthetic_reader):
        image = _png(_digit(2))
        boundary = "----torchmnist7d3"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"d.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
        with Running(synthetic_reader) as server:
            status, _, answer = server.request("POST", "/predict", body=body,
                                               headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            plain = server.request("POST", "/predict", body=image, headers={"Content-Type": "image/png"})[2]
        assert status == 200 and json.loads(answer) == json.loads(plain)

    def test_a_form_without_a_file(self, synthetic_reader):
        with Running(synthetic_reader) as server:
            status, _, answer = server.request("POST", "/predict", body=b"--b--\r\n",
                                               headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert status == 400 and "holds no file" in json.loads(answer)["error"]
