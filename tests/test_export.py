"""Exported models: verified at export, loadable without torch_mnist, and read without torch at all."""

import json
import sys

import numpy as np
import pytest
import torch

from torch_mnist.commands.export import main as export_main
from torch_mnist.commands.predict import main as predict_main
from torch_mnist.data.mnist import load_mnist
from torch_mnist.inference.digits import preprocess_image

from conftest import REPO, assert_one_line_error_in_process, run_command, run_in_process

onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra is not installed")


@pytest.fixture(scope="module")
def exported(trained_checkpoint, real_root, tmp_path_factory):
    """Both formats of the 2-epoch model, exported once through the command."""
    folder = tmp_path_factory.mktemp("exported")
    for fmt in ("onnx", "pt2"):
        code = export_main(["--checkpoint", str(trained_checkpoint), "--format", fmt, "--out",
                            str(folder / f"model.{fmt}"), "--data-dir", str(real_root)])
        assert code == 0
    return folder


def _raw_test_pixels(real_root, count=500):
    return load_mnist(real_root, train=False).data[:count].numpy()


@pytest.mark.slow
class TestExport:
    def test_onnx_takes_raw_pixels_any_batch_and_carries_its_metadata(self, exported, real_root):
        session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
        assert [(i.name, i.shape[1:], i.type) for i in session.get_inputs()] == [("image", [1, 28, 28],
                                                                                  "tensor(float)")]
        assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
        meta = session.get_modelmeta().custom_metadata_map
        assert json.loads(meta["class_names"]) == [str(d) for d in range(10)] and meta["dataset"] == "mnist"
        assert json.loads(meta["normalization"])["name"] == "scale" and float(meta["test_accuracy"]) > 0.95
        pixels = _raw_test_pixels(real_root)
        for batch in (1, 7, 500):  # a dynamic batch dimension
            logits, probabilities = session.run(None, {"image": pixels[:batch, None].astype(np.float32)})
            assert logits.shape == probabilities.shape == (batch, 10)
            assert np.allclose(probabilities.sum(1), 1, atol=1e-5)

    def test_pt2_loads_with_torch_alone_and_agrees_with_onnx(self, exported, real_root):
        program = torch.export.load(str(exported / "model.pt2")).module()  # no torch_mnist code involved
        pixels = _raw_test_pixels(real_root)
        logits, probabilities = program(torch.from_numpy(pixels[:, None]).float())
        session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
        onnx_probabilities = session.run(["probabilities"], {"image": pixels[:, None].astype(np.float32)})[0]
        assert np.abs(probabilities.detach().numpy() - onnx_probabilities).max() <= 1e-5

    def test_the_command_reports_its_verification(self, trained_checkpoint, real_root, tmp_path, capsys):
        result = run_in_process(export_main, ["--checkpoint", trained_checkpoint, "--out", tmp_path / "m.onnx",
                                              "--data-dir", real_root], capsys)
        assert result.returncode == 0
        assert "the same digit as the checkpoint on 10,000 of 10,000" in result.stdout
        assert f"written: {tmp_path / 'm.onnx'}" in result.stdout

    @pytest.mark.scripts
    def test_sigterm_while_exporting_leaves_nothing_behind(self, trained_checkpoint, real_root, tmp_path, processes):
        import signal
        import time
        out = tmp_path / "out" / "m.onnx"
        out.parent.mkdir()
        process = processes.start([sys.executable, str(REPO / "scripts" / "export.py"), "--checkpoint",
                                   str(trained_checkpoint), "--out", str(out), "--data-dir", str(real_root)])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(out.parent.iterdir()) and process.poll() is None:
            time.sleep(0.01)  # until the staging folder beside --out exists
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 143, stderr
        assert list(out.parent.iterdir()) == []  # no hidden folder, no half-written model

    @pytest.mark.scripts
    def test_a_pt2_under_any_name_is_written_without_torch_warnings(self, trained_checkpoint, real_root, tmp_path):
        result = run_command([sys.executable, REPO / "scripts" / "export.py", "--checkpoint", trained_checkpoint,
                              "--format", "pt2", "--out", tmp_path / "model.bin", "--data-dir", real_root])
        assert result.returncode == 0 and result.stderr == "", result.stderr
        with open(tmp_path / "model.bin", "rb") as f:
            assert torch.export.load(f).module()(torch.zeros(2, 1, 28, 28))[1].shape == (2, 10)

    def test_a_model_that_disagrees_is_not_written(self, trained_checkpoint, real_root, tmp_path, monkeypatch):
        from torch_mnist import load_checkpoint
        from torch_mnist.deploy import export
        from torch_mnist.errors import UserError
        real_verify = export._verify

        def off_by_one(run_exported, *args):  # as if the exported graph computed something else
            return real_verify(lambda images: np.roll(run_exported(images), 1, axis=1), *args)

        monkeypatch.setattr(export, "_verify", off_by_one)
        with pytest.raises(UserError, match="the exported model disagrees with the checkpoint.*nothing was written"):
            export.export(load_checkpoint(trained_checkpoint), real_root, "onnx", tmp_path / "m.onnx")
        assert list(tmp_path.iterdir()) == []  # not the file, not a temporary one

    def test_predict_with_the_onnx_model_never_imports_torch(self, exported, real_root, tmp_path):
        digit = load_mnist(real_root, train=False).data[0].numpy()  # a 7
        from PIL import Image
        Image.fromarray(digit).save(tmp_path / "seven.png")
        blocker = tmp_path / "no_torch"
        (blocker / "torch").mkdir(parents=True)
        (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is not on this machine')\n")
        env = {"PYTHONPATH": f"{blocker}:{REPO}", "PATH": "/usr/bin:/bin"}
        result = run_command([sys.executable, REPO / "scripts" / "predict.py", "--model", exported / "model.onnx",
                              tmp_path / "seven.png", "--json"], timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)[0]
        assert answer["prediction"] == 7 and answer["class_name"] == "7"

    def test_predict_agrees_between_checkpoint_and_onnx(self, exported, trained_checkpoint, real_root, tmp_path,
                                                         capsys):
        from digit_images import FAMILIES, capture_family, sample_test_digits
        digits, _ = sample_test_digits(load_mnist(real_root, train=False), 12, seed=4)
        paths = []
        for family in sorted(FAMILIES):  # captures of every kind: the two share the preprocessing, not the model
            for i, capture in enumerate(capture_family(family, digits, seed=4)):
                paths.append(tmp_path / f"{len(paths)}.img")
                paths[-1].write_bytes(capture.data)
        by_checkpoint = run_in_process(predict_main, ["--checkpoint", trained_checkpoint, "--json", *paths], capsys)
        by_onnx = run_in_process(predict_main, ["--model", exported / "model.onnx", "--json", *paths], capsys)
        ours, theirs = json.loads(by_checkpoint.stdout), json.loads(by_onnx.stdout)
        assert [a["prediction"] for a in ours] == [b["prediction"] for b in theirs]
        for a, b in zip(ours, theirs):
            assert np.allclose([p for _, p in a["top3"]], [p for _, p in b["top3"]], atol=1e-5)
        assert preprocess_image(paths[0]).shape == (28, 28)


class TestBadInput:
    def test_a_checkpoint_that_fails_validation(self, tmp_path, capsys):
        (tmp_path / "bad.pt").write_text("hello")
        assert_one_line_error_in_process(export_main, ["--checkpoint", tmp_path / "bad.pt"], capsys,
                                         "a text file, not a checkpoint")
        assert not (tmp_path / "bad.onnx").exists()

    def test_an_unwritable_out_is_refused_first(self, tmp_path, capsys):
        assert_one_line_error_in_process(export_main, ["--checkpoint", tmp_path / "none.pt", "--out",
                                                       "/proc/model.onnx"], capsys, "folder /proc is not writable")

    def test_an_unknown_format(self, capsys):
        assert_one_line_error_in_process(export_main, ["--format", "tflite"], capsys,
                                         "argument --format: invalid choice: 'tflite'")

    def test_a_missing_extra_says_what_to_install(self, synthetic_root, tmp_path, capsys, monkeypatch):
        from torch_mnist import TrainConfig, run_training
        run_training(TrainConfig(epochs=1), synthetic_root, torch.device("cpu"), tmp_path / "c.pt")
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
        assert_one_line_error_in_process(export_main, ["--checkpoint", tmp_path / "c.pt", "--data-dir",
                                                       synthetic_root], capsys,
                                         "the export extra is not installed; pip install -e '.[export]'")
        assert not (tmp_path / "c.onnx").exists()
        assert_one_line_error_in_process(predict_main, ["--model", tmp_path / "c.onnx", "x.png"], capsys,
                                         "onnxruntime is not installed")

    @pytest.mark.parametrize("outputs, class_names, message", [
        (784, json.dumps([str(i) for i in range(10)]), "its probabilities are shaped"),
        (10, json.dumps(["x"]), "its class names are missing or unreadable"),
        (10, json.dumps("abcdefghij"), "its class names are missing or unreadable"),
        (10, "null", "its class names are missing or unreadable"),
        (10, "{not json", "its class names are missing or unreadable"),
    ])
    def test_predict_refuses_crafted_metadata_and_shapes(self, tmp_path, capsys, outputs, class_names, message):
        import onnx
        from onnx import TensorProto, helper
        # image (N, 1, 28, 28) -> a flat (N, 784) "probabilities", sliced to the claimed count of outputs
        nodes = [helper.make_node("Flatten", ["image"], ["flat"]),
                 helper.make_node("Slice", ["flat", "start", "end", "axis"], ["probabilities"])]
        constants = [helper.make_tensor(name, TensorProto.INT64, [1], [value])
                     for name, value in (("start", 0), ("end", outputs), ("axis", 1))]
        graph = helper.make_graph(nodes, "crafted", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                   ["N", 1, 28, 28])],
                                  [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", outputs])],
                                  initializer=constants)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        for key, value in (("torch_mnist_version", "0.1.0"), ("class_names", class_names)):
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(tmp_path / "crafted.onnx"))
        from PIL import Image
        Image.new("L", (28, 28), 0).save(tmp_path / "x.png")
        assert_one_line_error_in_process(predict_main, ["--model", tmp_path / "crafted.onnx", tmp_path / "x.png"],
                                         capsys, message)

    @pytest.mark.parametrize("content, message", [
        (b"\x08\x07garbage that is no protobuf", "not a readable ONNX model"),
        (None, "an ONNX model, but not one exported by torch_mnist"),
        ("missing", "no such model file"),
    ])
    def test_predict_refuses_models_that_are_not_ours(self, tmp_path, capsys, content, message):
        path = tmp_path / "model.onnx"
        if content is None:  # a valid ONNX model of someone else's: y = x + 1
            import onnx
            from onnx import TensorProto, helper
            graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other",
                                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
            onnx.save(helper.make_model(graph), str(path))
        elif content != "missing":
            path.write_bytes(content)
        assert_one_line_error_in_process(predict_main, ["--model", path, "digit.png"], capsys, message)
