"""ONNX files that claim to be ours but are not: a graph that loops without end, class names that would
drive a terminal. Built with the onnx package (the export extra), read by onnxruntime."""

import json
import signal
import sys
import time

import numpy as np
import pytest

from torch_mnist.commands.predict import main as predict_main
from torch_mnist.inference import onnx_reader

from conftest import REPO, assert_one_line_error_in_process, run_in_process

onnx = pytest.importorskip("onnx", reason="the export extra is not installed")
pytest.importorskip("onnxruntime", reason="the export extra is not installed")
from onnx import TensorProto, helper  # noqa: E402


def _model(path, class_names=None, endless=False):
    """image (N, 1, 28, 28) -> probabilities (N, 10) with our metadata: a uniform answer, or (``endless``) one
    behind a Loop whose condition never turns false and which has no trip count."""
    nodes = [helper.make_node("Flatten", ["image"], ["flat"]),
             helper.make_node("ReduceSum", ["flat", "axes"], ["sums"], keepdims=1),
             helper.make_node("Mul", ["sums", "zero"], ["zeros"]),
             helper.make_node("Add", ["zeros", "tenth"], ["uniform"])]
    initializers = [helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
                    helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                    helper.make_tensor("tenth", TensorProto.FLOAT, [1, 10], [0.1] * 10),
                    helper.make_tensor("true", TensorProto.BOOL, [], [True])]
    if endless:
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Identity", ["v_in"], ["v_out"])],
            "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                     helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                     helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
        nodes += [helper.make_node("Loop", ["", "true", "uniform"], ["probabilities"], body=body)]
    else:
        nodes += [helper.make_node("Identity", ["uniform"], ["probabilities"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    names = class_names or [str(d) for d in range(10)]
    for key, value in (("torch_mnist_version", "0.1.0"), ("class_names", json.dumps(names))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def _digit(tmp_path):
    from PIL import Image
    page = np.full((100, 100), 255, np.uint8)
    page[20:80, 45:55] = 0
    Image.fromarray(page).save(tmp_path / "one.png")
    return tmp_path / "one.png"


def test_a_graph_that_never_ends_is_stopped_at_its_deadline(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(onnx_reader, "RUN_SECONDS", 1.0)
    model = _model(tmp_path / "loop.onnx", endless=True)
    started = time.monotonic()
    assert_one_line_error_in_process(predict_main, ["--model", model, _digit(tmp_path)], capsys,
                                     "loop.onnx: the model ran past its deadline")
    assert time.monotonic() - started < 30


@pytest.mark.scripts
def test_sigterm_ends_a_graph_that_never_ends(tmp_path, processes):
    model = _model(tmp_path / "loop.onnx", endless=True)
    process = processes.start([sys.executable, str(REPO / "scripts" / "predict.py"), "--model", str(model),
                               str(_digit(tmp_path))])
    time.sleep(3)  # imports, the session, and into the endless run
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143 and stderr.strip().splitlines() == ["interrupted"], stderr


def test_class_names_are_printed_without_their_control_characters(tmp_path, capsys):
    names = ["\x1b]0;owned\x07", "\x1b[2J", "x\nerror: forged"] + [str(d) for d in range(3, 10)]
    model = _model(tmp_path / "m.onnx", class_names=names)
    result = run_in_process(predict_main, ["--model", model, _digit(tmp_path)], capsys)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and result.stdout.count("\n") == 1
    assert "\\x1b" in result.stdout or "\\n" in result.stdout
