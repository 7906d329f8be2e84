"""Generated broken inputs, each held to the contract: library calls raise UserError, commands exit 2 with
one ``error:`` line, no code from a file runs, and no file that was there is changed.

Examples per test: TORCH_MNIST_FUZZ_EXAMPLES (default 15, derandomized under CI=true, so CI is
repeatable); the README's figures come from a long run with a larger count.
"""

import io
import os
import struct
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from torch_mnist import TrainConfig, UserError, build, load_checkpoint, save_checkpoint# noqa: E402
from torch_mnist.training.checkpoint import build_model, make_checkpoint, restore  # noqa: E402
from torch_mnist.commands import benchmark, evaluate, plot, predict, prepare, reproduce, serve, train  # noqa: E402
from torch_mnist.commands.common import run_main  # noqa: E402
from torch_mnist.data.idx import check_split  # noqa: E402
from torch_mnist.inference.digits import preprocess_image  # noqa: E402

from conftest import make_synthetic_root, save_with_digest, write_idx_images, write_idx_labels  # noqa: E402

pytestmark = pytest.mark.fuzz
EXAMPLES = int(os.environ.get("TORCH_MNIST_FUZZ_EXAMPLES", "15"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=bool(os.environ.get("CI")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> tuple:
    """A real one-epoch checkpoint (small model) as bytes, with the checkpoint it holds."""
    folder = tmp_path_factory.mktemp("good")
    config = TrainConfig(epochs=1, hidden=(16,))
    recipe = build(config, CPU)
    recipe.model(torch.rand(4, 784)).sum().backward()
    recipe.optimizer.step()
    history = {"loss": [0.3], "accuracy": [0.9], "val_loss": [0.2], "val_accuracy": [0.95]}
    save_checkpoint(make_checkpoint(recipe.model, recipe.optimizer, config, 1, history,
                                    torch.Generator().manual_seed(0)), folder / "good.pt")
    return (folder / "good.pt").read_bytes(), load_checkpoint(folder / "good.pt")


def _loads_or_refuses(path, original: dict) -> None:
    """The contract for a damaged copy: refused with a UserError, or (the damage fell where no content
    lives, in zip padding say) loaded with every tensor exactly the original's, and usable."""
    before = path.read_bytes()
    try:
        loaded = load_checkpoint(path)
    except UserError as e:
        assert "\n" not in str(e)
        return
    finally:
        assert path.read_bytes() == before  # loading never writes
    for name, tensor in original["model_state"].items():
        assert torch.equal(loaded["model_state"][name], tensor)
    _usable(loaded)


def _usable(checkpoint: dict) -> None:
    """What evaluate and --resume do with a checkpoint: rebuild the model and restore the run."""
    build_model(checkpoint)
    recipe = build(TrainConfig.from_dict(checkpoint["config"]), CPU)
    restore(checkpoint, recipe.model, recipe.optimizer, torch.Generator(), CPU)


class TestCheckpoints:
    @FUZZ
    @given(fraction=st.floats(0, 1, exclude_max=True))
    def test_truncated_at_any_length(self, good_checkpoint, tmp_path, fraction):
        data, original = good_checkpoint
        path = tmp_path / "cut.pt"
        path.write_bytes(data[:int(fraction * len(data))])
        _loads_or_refuses(path, original)

    @FUZZ
    @given(damage=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1,
                           max_size=40))
    def test_overwritten_bytes_anywhere(self, good_checkpoint, tmp_path, damage):
        data, original = good_checkpoint
        damaged = bytearray(data)
        for where, flip in damage:
            damaged[int(where * len(data))] ^= flip
        path = tmp_path / "flipped.pt"
        path.write_bytes(bytes(damaged))
        _loads_or_refuses(path, original)

    @FUZZ
    @given(field=st.sampled_from(["format", "format_version", "config", "epoch", "history", "model_state",
                                  "optimizer_state", "rng_state", "torch_rng_state", "digest"]),
           value=st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(), st.text(max_size=8),
                           st.lists(st.integers(-3, 3), max_size=4),
                           st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
                           st.builds(torch.zeros, st.integers(0, 6)), st.just("__removed__")))
    def test_each_field_removed_mistyped_or_out_of_range(self, good_checkpoint, tmp_path, field, value):
        _, original = good_checkpoint
        checkpoint = dict(original)
        if value == "__removed__":
            del checkpoint[field]
        else:
            checkpoint[field] = value
        save_with_digest(checkpoint, tmp_path / "odd.pt")  # a crafted file carries a matching digest
        try:
            _usable(load_checkpoint(tmp_path / "odd.pt"))
        except UserError as e:
            assert "\n" not in str(e)

    @FUZZ
    @given(target=st.sampled_from(["os.system", "builtins.exec", "builtins.eval", "subprocess.call",
                                   "shutil.rmtree", "builtins.open"]),
           wrap=st.sampled_from(["plain", "in_dict", "in_list", "beside_weights"]))
    def test_crafted_pickles_never_run(self, good_checkpoint, tmp_path, target, wrap):
        marker = tmp_path / "ran"
        payload = Payload(target, marker)
        _, original = good_checkpoint
        content = {"plain": payload, "in_dict": {"format": "torch_mnist.training.checkpoint", "config": payload},
                   "in_list": [1, payload], "beside_weights": {**original, "extra": payload}}[wrap]
        torch.save(content, tmp_path / "evil.pt")
        with pytest.raises(UserError, match="refused: it holds Python objects that could run code"):
            load_checkpoint(tmp_path / "evil.pt")
        assert not marker.exists()


class Payload:
    """Unpickling this calls ``target`` on an argument that would create ``marker``, as a malicious file does."""

    def __init__(self, target: str, marker):
        self.target, self.marker = target, str(marker)

    def __reduce__(self):
        import builtins
        import importlib
        module, name = self.target.rsplit(".", 1)
        function = getattr(importlib.import_module(module), name)
        argument = {"system": f"touch {self.marker}", "call": ["touch", self.marker],
                    "exec": f"open({self.marker!r}, 'w')", "eval": f"open({self.marker!r}, 'w')",
                    "open": self.marker, "rmtree": self.marker}[name]
        args = (argument, "w") if function is builtins.open else (argument,)
        return function, args


class TestIdxFiles:
    @FUZZ
    @given(magic=st.sampled_from([0x803, 0x801, 0x802, 0, 0xFFFFFFFF]), count=st.integers(0, 2 ** 32 - 1),
           rows=st.integers(0, 2 ** 32 - 1), cols=st.integers(0, 2 ** 32 - 1), body=st.binary(max_size=2000),
           label_count=st.integers(0, 2 ** 32 - 1), labels=st.binary(max_size=50))
    def test_headers_sizes_and_counts(self, tmp_path, magic, count, rows, cols, body, label_count, labels):
        raw = tmp_path / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">IIII", magic, count, rows, cols) + body)
        (raw / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, label_count) + labels)
        try:
            found = check_split(raw, "test")
        except UserError as e:
            assert "\n" not in str(e)
            return
        assert found == count == label_count and (rows, cols) == (28, 28)  # only a consistent pair passes

    @FUZZ
    @given(fraction=st.floats(0, 1, exclude_max=True), which=st.sampled_from(["images", "labels"]))
    def test_truncated(self, tmp_path, fraction, which):
        raw = tmp_path / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        write_idx_images(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28)))
        write_idx_labels(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 20))
        path = raw / f"t10k-{which}-idx{3 if which == 'images' else 1}-ubyte"
        path.write_bytes(path.read_bytes()[:int(fraction * path.stat().st_size)])
        with pytest.raises(UserError):
            check_split(raw, "test")


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 255).save(buffer, format="PNG")
    return buffer.getvalue()


def _declared_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its pixel data is for 1 x 1)."""
    import zlib
    data = bytearray(_png(1, 1))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


class TestImages:
    @FUZZ
    @given(kind=st.sampled_from(["png", "jpeg", "gif", "bmp"]), fraction=st.floats(0, 1, exclude_max=True))
    def test_truncated_images(self, tmp_path, kind, fraction):
        buffer = io.BytesIO()
        image = Image.new("RGB", (64, 48), "white")
        image.paste((0, 0, 0), (20, 10, 30, 40))
        image.save(buffer, format=kind.upper() if kind != "jpeg" else "JPEG")
        data = buffer.getvalue()
        path = tmp_path / f"digit.{kind}"
        path.write_bytes(data[:int(fraction * len(data))])
        self._readable_or_refused(path)

    @FUZZ
    @given(width=st.integers(0, 2 ** 31 - 1), height=st.integers(0, 2 ** 31 - 1))
    def test_any_declared_dimensions(self, tmp_path, width, height):
        path = tmp_path / "declared.png"
        path.write_bytes(_declared_png(width, height))
        self._readable_or_refused(path)

    @FUZZ
    @given(data=st.binary(max_size=3000))
    def test_arbitrary_bytes(self, tmp_path, data):
        path = tmp_path / "noise.png"
        path.write_bytes(data)
        self._readable_or_refused(path)

    @staticmethod
    def _readable_or_refused(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # nothing may leak to the user's terminal either
                pixels = preprocess_image(path)
        except UserError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            return
        assert pixels.shape == (28, 28) and pixels.dtype == np.uint8


class ReachedWork(Exception):
    """Raised by the stand-in for a command's real work: the flags were accepted."""


def _stand_in(*args, **kwargs):
    raise ReachedWork


FLAG_VALUES = st.one_of(st.integers(-10 ** 20, 10 ** 20).map(str), st.floats().map(str),
                        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                                max_size=12),
                        st.sampled_from(["", "-1", "0", "nan", "inf", "1e999", "cuda:99", "auto", "keras3", "bf16"]))


def _argv(draw, module) -> list:
    actions = [a for a in module.parser()._actions if a.option_strings and a.dest != "help"]
    chosen = draw(st.lists(st.sampled_from(actions), max_size=4, unique_by=lambda a: a.dest))
    argv = []
    for action in chosen:
        argv.append(action.option_strings[0])
        if action.nargs != 0:
            argv += [draw(FLAG_VALUES) for _ in range(draw(st.integers(0, 2)) if action.nargs in ("+", "*") else 1)]
    return argv + draw(st.lists(FLAG_VALUES, max_size=2))  # and stray positional values


COMMANDS = {"train": (train, ["torch_mnist.training.run.run_training"]),
            "evaluate": (evaluate, ["torch_mnist.commands.runs.load_run"]),
            "predict": (predict, ["torch_mnist.inference.predict.predict_files"]),
            "plot": (plot, ["torch_mnist.reports.plots.plot_curves"]),
            "benchmark": (benchmark, ["torch_mnist.reports.benchmark.run_benchmark"]),
            "reproduce": (reproduce, ["torch_mnist.reports.reproduce.run_seeds"]),
            "prepare_data": (prepare, ["torch_mnist.data.prepare.prepare_dataset"]),
            "serve": (serve, ["torch_mnist.deploy.serve.make_server"])}


@pytest.mark.parametrize("name", sorted(COMMANDS))
@FUZZ
@given(data=st.data())
def test_flag_values_for_every_script(name, data, tmp_path_factory, capsys, monkeypatch):
    module, work = COMMANDS[name]
    for target in work:  # the commands' real work is stood in for: what is fuzzed is the road to it
        monkeypatch.setattr(target, _stand_in)
    folder = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(folder)  # default outputs (ckpt.pt, bench.json, runs/) land in a fresh folder
    make_synthetic_root(folder / "data")
    argv = _argv(data.draw, module)
    try:
        code = run_main(module.main, argv)
    except ReachedWork:
        return  # the flags were sound: the command got as far as its work
    except SystemExit as e:  # --help (or -h) among the values
        assert e.code == 0, argv
        return
    captured = capsys.readouterr()
    if code == 0:
        return  # e.g. plot of nothing: nothing to refuse
    assert code == 2, (argv, captured.err)
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, (argv, captured.err)


class TestOutputsOnInputs:
    """Any output flag pointed at any input (directly or through a link) is refused, and nothing changes."""

    DATA = ("test images", "test labels")

    @FUZZ
    @given(case=st.sampled_from([  # each command, and the files it reads (or, for train, must not lose)
        ("train", ["--epochs", "1", "--data-dir", "{data}", "--out", "{target}"], DATA + ("image",)),
        ("train", ["--epochs", "1", "--data-dir", "{data}", "--out", "{fresh}", "--log-csv", "{target}"],
         DATA + ("ckpt", "history", "image")),
        ("evaluate", ["--checkpoint", "{ckpt}", "--data-dir", "{data}", "--misclassified", "{target}"],
         DATA + ("ckpt", "history")),
        ("predict", ["--checkpoint", "{ckpt}", "{image}", "--show-input", "{target}"], ("ckpt", "image")),
        ("export", ["--checkpoint", "{ckpt}", "--data-dir", "{data}", "--out", "{target}"],
         DATA + ("ckpt", "history")),
    ]), pick=st.integers(0, 10), via=st.sampled_from(["path", "symlink", "hard link", "dot-dot"]))
    def test_an_output_on_an_input(self, tmp_path_factory, good_checkpoint, case, pick, via):
        from torch_mnist.commands import export as export_command
        folder = tmp_path_factory.mktemp("clash")
        data = make_synthetic_root(folder / "data", train=64, test=32)
        (folder / "c.pt").write_bytes(good_checkpoint[0])
        (folder / "c.json").write_text('{"epoch": 1, "history": {}}')
        Image.new("L", (40, 40), 255).save(folder / "img.png")
        raw = data / "MNIST" / "raw"
        inputs = {"ckpt": folder / "c.pt", "history": folder / "c.json", "image": folder / "img.png",
                  "test images": raw / "t10k-images-idx3-ubyte", "test labels": raw / "t10k-labels-idx1-ubyte"}
        name, template, targets = case
        chosen = inputs[targets[pick % len(targets)]]
        if via == "symlink":
            (folder / "link").symlink_to(chosen)
            chosen = folder / "link"
        elif via == "hard link":
            os.link(chosen, folder / "hard")
            chosen = folder / "hard"
        elif via == "dot-dot":
            chosen = chosen.parent / ".." / chosen.parent.name / chosen.name
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        values = {"data": data, "ckpt": folder / "c.pt", "image": folder / "img.png", "target": chosen,
                  "fresh": folder / "fresh.pt"}
        args = [part.format(**{k: str(v) for k, v in values.items()}) for part in template]
        mains = {"train": train.main, "evaluate": evaluate.main, "predict": predict.main,
                 "export": export_command.main}
        assert run_main(mains[name], args) == 2
        assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


class TestCraftedOnnxMetadata:
    @FUZZ
    @given(names=st.one_of(st.none(), st.text(max_size=30), st.lists(st.one_of(st.text(max_size=3), st.integers()),
                                                                        max_size=12).map(__import__("json").dumps)),
           outputs=st.integers(1, 784))
    def test_any_class_names_and_output_width(self, tmp_path_factory, names, outputs):
        onnx = pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
        from onnx import TensorProto, helper
        from torch_mnist.inference.onnx_reader import OnnxDigitReader
        folder = tmp_path_factory.mktemp("onnx")
        constants = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in
                     (("start", 0), ("end", outputs), ("axis", 1))]
        graph = helper.make_graph([helper.make_node("Flatten", ["image"], ["flat"]),
                                   helper.make_node("Slice", ["flat", "start", "end", "axis"], ["probabilities"])],
                                  "crafted", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            ["N", 1, 28, 28])],
                                  [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", outputs])],
                                  initializer=constants)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        model.metadata_props.add(key="torch_mnist_version", value="0.1.0")
        if names is not None:
            model.metadata_props.add(key="class_names", value=names)
        onnx.save(model, str(folder / "m.onnx"))
        try:
            reader = OnnxDigitReader(folder / "m.onnx")
        except UserError as e:
            assert "\n" not in str(e)
            return
        assert len(reader.class_names) == 10 and outputs == 10  # only a well-formed model gets this far
        assert reader.probabilities(np.zeros((3, 28, 28), np.uint8)).shape == (3, 10)


class TestMalformedHttp:
    @FUZZ
    @given(length=st.one_of(st.text(max_size=40), st.integers(-10, 10 ** 30).map(str)),
           extra=st.lists(st.tuples(st.text("abcXYZ-", min_size=1, max_size=10), st.text(max_size=30)), max_size=5),
           body=st.binary(max_size=200))
    def test_any_content_length_and_headers(self, synthetic_server, length, extra, body):
        import socket
        headers = "".join(f"{k}: {v}\r\n" for k, v in extra if "\r" not in v and "\n" not in v)
        request = (f"POST /predict HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {length}\r\n\r\n"
                   .encode("utf-8", "surrogateescape") + body)
        with socket.create_connection(("127.0.0.1", synthetic_server.server_address[1]), timeout=10) as client:
            client.sendall(request)
            client.shutdown(socket.SHUT_WR)  # a body shorter than announced ends here
            answer = b""
            try:
                while chunk := client.recv(65536):
                    answer += chunk
            except (TimeoutError, ConnectionError):
                pass
        if answer:  # an answer, when there is one, is the API's JSON
            head, _, rest = answer.partition(b"\r\n\r\n")
            assert b"application/json" in head, answer[:300]


@pytest.fixture(scope="module")
def synthetic_server(tmp_path_factory):
    """The drawing page's server on a free port, reading with a small synthetic model; its log must stay empty."""
    import threading
    from functools import partial
    from torch_mnist.training.checkpoint import checkpoint_normalization
    from torch_mnist.training.epoch import predict_probabilities
    from torch_mnist.deploy.serve import DigitReader, make_server
    from torch_mnist import run_training
    folder = tmp_path_factory.mktemp("served")
    run_training(TrainConfig(epochs=1, hidden=(16,)), make_synthetic_root(folder / "data"), CPU, folder / "c.pt")
    checkpoint = load_checkpoint(folder / "c.pt")
    reader = DigitReader(partial(predict_probabilities, build_model(checkpoint), checkpoint_normalization(checkpoint)),
                         [str(d) for d in range(10)])
    server = make_server(reader, "127.0.0.1", 0, timeout=2.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


class TestSpecialDataFiles:
    """Any of the four data files as a directory, a FIFO, a link to a device, a dangling link or empty."""

    @FUZZ
    @given(name=st.sampled_from(["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                 "t10k-labels-idx1-ubyte"]),
           kind=st.sampled_from(["directory", "fifo", "/dev/zero", "/dev/null", "dangling", "empty"]),
           command=st.sampled_from(["train", "evaluate"]))
    def test_a_data_file_that_is_no_file(self, tmp_path_factory, good_checkpoint, name, kind, command):
        folder = tmp_path_factory.mktemp("special")
        root = make_synthetic_root(folder / "data", train=64, test=32)
        target = root / "MNIST" / "raw" / name
        target.unlink()
        if kind == "directory":
            target.mkdir()
        elif kind == "fifo":
            os.mkfifo(target)
        elif kind == "dangling":
            target.symlink_to(folder / "nowhere")
        elif kind == "empty":
            target.write_bytes(b"")
        else:
            target.symlink_to(kind)
        (folder / "c.pt").write_bytes(good_checkpoint[0])
        if command == "train":
            code = run_main(train.main, ["--epochs", "1", "--data-dir", str(root), "--out", str(folder / "new.pt"),
                                         "--quiet", "--no-plots"])
            assert code == 2 and not (folder / "new.pt").exists()
        else:
            code = run_main(evaluate.main, ["--checkpoint", str(folder / "c.pt"), "--data-dir", str(root), "--json"])
            assert code == (0 if name.startswith("train") else 2)  # evaluating reads the test files only


class TestCraftedKerasFiles:
    """Keras files that declare what no model of the family has: nesting, sizes, storage elsewhere."""

    @FUZZ
    @given(depth=st.integers(1, 300_000), opener=st.sampled_from(["[", '{"a":']), where=st.sampled_from(
        ["config.json", "metadata.json"]))
    def test_any_nesting_depth(self, tmp_path_factory, depth, opener, where):
        import json
        import zipfile
        h5py = pytest.importorskip("h5py")  # noqa: F841
        from test_keras_convert import _dense, _sequential, _write_keras3
        folder = tmp_path_factory.mktemp("nest")
        path = _write_keras3(folder / "m.keras", _sequential(_dense("a", 16), _dense("c", 10, "softmax")))
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        closer = "]" if opener == "[" else "}"
        members[where] = ('{"x": ' + opener * depth + "0" + closer * depth + "}").encode()
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        _refused_in_one_line(path, json)

    @FUZZ
    @given(units=st.one_of(st.integers(-5, 2 ** 40), st.text(max_size=5), st.floats(allow_nan=True)),
           layer=st.integers(0, 1), kind=st.sampled_from(["keras", "h5"]))
    def test_any_declared_width(self, tmp_path_factory, units, layer, kind):
        import json
        import zipfile
        pytest.importorskip("h5py")
        from test_keras_convert import _dense, _sequential, _write_keras2_h5, _write_keras3
        folder = tmp_path_factory.mktemp("width")
        if kind == "keras":
            path = _write_keras3(folder / "m.keras", _sequential(_dense("a", 16), _dense("c", 10, "softmax")))
            with zipfile.ZipFile(path) as archive:
                members = {name: archive.read(name) for name in archive.namelist()}
            config = json.loads(members["config.json"])
            config["config"]["layers"][1 + layer]["config"]["units"] = units
            members["config.json"] = json.dumps(config).encode()
            with zipfile.ZipFile(path, "w") as archive:
                for name, data in members.items():
                    archive.writestr(name, data)
        else:
            import h5py
            path = _write_keras2_h5(folder / "m.h5")
            with h5py.File(path, "r+") as h5:
                config = json.loads(h5.attrs["model_config"])
                config["config"]["layers"][layer]["config"]["units"] = units
                h5.attrs["model_config"] = json.dumps(config)
        widths = (16, 10)
        if units == widths[layer]:
            return  # the file as written: it converts
        _refused_in_one_line(path, json)

    @FUZZ
    @given(how=st.sampled_from(["external", "external link", "soft link", "virtual"]),
           target=st.sampled_from(["kernel", "bias", "optimizer"]))
    def test_storage_outside_the_file(self, tmp_path_factory, how, target):
        import json
        h5py = pytest.importorskip("h5py")
        from test_keras_convert import _write_keras2_h5
        folder = tmp_path_factory.mktemp("storage")
        path = _write_keras2_h5(folder / "m.h5")
        secret = folder / "secret.bin"
        secret.write_bytes(b"\x01" * 784 * 16 * 4)
        name, shape = {"kernel": ("model_weights/dense/dense/kernel:0", (784, 16)),
                       "bias": ("model_weights/dense/dense/bias:0", (16,)),
                       "optimizer": ("optimizer_weights/RMSprop/dense/kernel/rms:0", (784, 16))}[target]
        with h5py.File(path, "r+") as h5:
            del h5[name]
            if how == "external":
                h5.create_dataset(name, shape=shape, dtype="f4", external=[(str(secret), 0, 4 * int(np.prod(shape)))])
            elif how == "external link":
                with h5py.File(folder / "other.h5", "w") as other:
                    other["x"] = np.zeros(shape, np.float32)
                h5[name] = h5py.ExternalLink(str(folder / "other.h5"), "/x")
            elif how == "soft link":
                h5["elsewhere"] = np.zeros(shape, np.float32)
                h5[name] = h5py.SoftLink("/elsewhere")
            else:
                with h5py.File(folder / "source.h5", "w") as source:
                    source["x"] = np.zeros(shape, np.float32)
                layout = h5py.VirtualLayout(shape=shape, dtype="f4")
                layout[...] = h5py.VirtualSource(str(folder / "source.h5"), "x", shape=shape)
                h5.create_virtual_dataset(name, layout)
        _refused_in_one_line(path, json)


def _refused_in_one_line(path, json) -> None:
    """convert.py --from-keras on ``path``, in this process: exit 2 with one line, nothing written."""
    import contextlib
    from torch_mnist.commands.convert import main as convert_main
    out, stderr = path.with_suffix(".pt"), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = run_main(convert_main, ["--from-keras", str(path), "--out", str(out)])
    lines = stderr.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, stderr.getvalue()[-2000:])
    assert not out.exists()


class TestEndlessOnnx:
    @FUZZ
    @given(condition=st.sampled_from(["Loop", "Scan-free Loop with a huge trip count"]))
    def test_a_graph_that_would_run_forever_is_stopped(self, tmp_path_factory, monkeypatch, condition):
        pytest.importorskip("onnx")
        from test_onnx_reader import _model
        from torch_mnist.inference import onnx_reader
        monkeypatch.setattr(onnx_reader, "RUN_SECONDS", 0.5)
        path = _model(tmp_path_factory.mktemp("loop") / "m.onnx", endless=True)
        reader = onnx_reader.OnnxDigitReader(path)
        with pytest.raises(UserError, match="ran past its deadline"):
            reader.probabilities(np.zeros((2, 28, 28), np.uint8))


class TestSlowClients:
    @FUZZ
    @given(pace=st.floats(0.01, 0.3), clients=st.integers(1, 40), split=st.sampled_from(["headers", "body"]))
    def test_prompt_clients_are_served_whatever_the_tricklers_do(self, trickle_server, pace, clients, split):
        import http.client
        import socket
        import time
        port = trickle_server.server_address[1]
        tricklers = []
        try:
            for _ in range(clients):
                client = socket.create_connection(("127.0.0.1", port), timeout=10)
                client.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n" +
                               (b"Content-Length: 100000\r\n\r\n" if split == "body" else b""))
                tricklers.append(client)
            for _ in range(3):
                for client in tricklers:
                    try:
                        client.sendall(b"x" if split == "body" else b"X-A: b\r\n")
                    except OSError:
                        pass
                time.sleep(pace)
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request("GET", "/health")
                assert connection.getresponse().status == 200
                connection.close()
        finally:
            for client in tricklers:
                client.close()


@pytest.fixture(scope="module")
def trickle_server(tmp_path_factory):
    """A server with few slots (8), so that a handful of tricklers would fill it."""
    import threading
    from torch_mnist.deploy.serve import DigitReader, make_server
    reader = DigitReader(lambda pixels: np.full((len(pixels), 10), 0.1), [str(d) for d in range(10)])
    server = make_server(reader, "127.0.0.1", 0, timeout=5.0, max_connections=8)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
