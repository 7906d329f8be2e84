"""convert.py between Keras and checkpoints: real Keras models both ways (keras tier), broken and foreign
files (fast tier, hand-written HDF5 and zip files, no Keras needed)."""

import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch

from torch_mnist import load_checkpoint
from torch_mnist.commands.convert import main as convert_main
from torch_mnist.commands.evaluate import main as evaluate_main
from torch_mnist.keras.convert import checkpoint_from_keras
from torch_mnist.keras.files import read_keras_model

from conftest import assert_one_line_error_in_process, run_in_process

h5py = pytest.importorskip("h5py", reason="the keras extra is not installed: pip install -e '.[keras]'")
os.environ.setdefault("KERAS_BACKEND", "torch")


def _dense(name, units, activation="relu", **extra):
    return {"class_name": "Dense", "config": {"name": name, "units": units, "activation": activation,
                                              "use_bias": True, **extra}}


def _sequential(*layers, shape=(None, 784)):
    return {"class_name": "Sequential",
            "config": {"name": "s", "layers": [{"class_name": "InputLayer",
                                                "config": {"name": "in", "batch_shape": list(shape)}}, *layers]}}


def _write_keras3(path, config, widths=(784, 16, 10), averages=True, seed=0):
    """A .keras file as Keras 3 writes one: config.json, metadata.json and model.weights.h5 in a zip."""
    rng = np.random.default_rng(seed)
    weights = io.BytesIO()
    with h5py.File(weights, "w") as h5:
        velocities = []
        for k, (inputs, outputs) in enumerate(zip(widths[:-1], widths[1:])):
            group = h5.create_group(f"layers/dense{'' if k == 0 else f'_{k}'}/vars")
            group["0"] = rng.normal(0, 0.1, (inputs, outputs)).astype(np.float32)
            group["1"] = rng.normal(0, 0.1, outputs).astype(np.float32)
            velocities += [rng.random((inputs, outputs)).astype(np.float32) * 1e-3,
                           rng.random(outputs).astype(np.float32) * 1e-3]
        optimizer = h5.create_group("optimizer/vars")
        optimizer["0"] = np.int32(938)
        optimizer["1"] = np.float32(1e-3)
        for i, velocity in enumerate(velocities if averages else []):
            optimizer[str(i + 2)] = velocity
    config = {**config, "compile_config": {"optimizer": {"class_name": "RMSprop", "config": {
        "learning_rate": 0.0010000000474974513, "rho": 0.9, "epsilon": 1e-07, "momentum": 0.0, "centered": False}}}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", weights.getvalue())
    return path


def _write_keras2_h5(path, iterations=1876, legacy=True):
    """An .h5 as Keras 2 / tf.keras wrote one (names with ':0', the legacy RMSprop's 'rms' slots), by hand."""
    rng = np.random.default_rng(1)
    layers = [{"class_name": "Dense", "config": {"name": "dense", "units": 16, "activation": "relu", "use_bias": True,
                                                 "batch_input_shape": [None, 784]}},
              {"class_name": "Dense", "config": {"name": "dense_1", "units": 10, "activation": "softmax",
                                                 "use_bias": True}}]
    optimizer = {"class_name": "RMSprop", "config": {"name": "RMSprop", "learning_rate": 0.001, "rho": 0.9,
                                                     "momentum": 0.0, "epsilon": 1e-07, "centered": False,
                                                     **({} if legacy else {"is_legacy_optimizer": False})}}
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"], h5.attrs["backend"] = "2.4.0", "tensorflow"
        h5.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"name": "s", "layers": layers}})
        h5.attrs["training_config"] = json.dumps({"optimizer_config": optimizer, "loss": "categorical_crossentropy"})
        weights = h5.create_group("model_weights")
        weights.attrs["layer_names"] = [b"dense", b"dense_1"]
        slots = [b"RMSprop/iter:0"]
        for name, (inputs, outputs) in (("dense", (784, 16)), ("dense_1", (16, 10))):
            group = weights.create_group(name)
            group.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            group[f"{name}/kernel:0"] = rng.normal(0, 0.1, (inputs, outputs)).astype(np.float32)
            group[f"{name}/bias:0"] = rng.normal(0, 0.1, outputs).astype(np.float32)
            slots += [f"RMSprop/{name}/kernel/rms:0".encode(), f"RMSprop/{name}/bias/rms:0".encode()]
        state = h5.create_group("optimizer_weights")
        state.attrs["weight_names"] = slots
        state["RMSprop/iter:0"] = np.int64(iterations)
        for slot, shape in zip(slots[1:], ((784, 16), (16,), (16, 10), (10,))):
            state[slot.decode()] = rng.random(shape).astype(np.float32) * 1e-3
    return path


class TestFromKerasFiles:
    @pytest.mark.parametrize("legacy, semantics", [(True, "keras2"), (False, "keras3")])
    def test_a_keras_2_h5_with_its_rmsprop_slots(self, tmp_path, legacy, semantics):
        model = read_keras_model(_write_keras2_h5(tmp_path / "old.h5", legacy=legacy))
        conversion = checkpoint_from_keras(model)
        assert model.hidden == (16,) and conversion.optimizer_carried and conversion.iterations == 1876
        assert conversion.checkpoint["config"]["keras_semantics"] == semantics  # eps outside for the legacy one
        with h5py.File(tmp_path / "old.h5") as h5:
            rms = np.asarray(h5["optimizer_weights/RMSprop/dense_1/kernel/rms:0"])
            kernel = np.asarray(h5["model_weights/dense/dense/kernel:0"])
        assert torch.equal(conversion.checkpoint["optimizer_state"]["state"][2]["square_avg"],
                           torch.from_numpy(rms.T.copy()))
        assert torch.equal(conversion.checkpoint["model_state"]["fc1.weight"], torch.from_numpy(kernel.T.copy()))

    def test_weights_settings_and_rmsprop_state_are_carried(self, tmp_path):
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("dense", 16), _dense("d2", 10, "softmax")))
        model = read_keras_model(path)
        conversion = checkpoint_from_keras(model)
        checkpoint = conversion.checkpoint
        assert checkpoint["config"]["hidden"] == [16] and checkpoint["config"]["keras_semantics"] == "keras3"
        assert checkpoint["config"]["lr"] == 0.001 and conversion.optimizer_carried and conversion.iterations == 938
        assert torch.equal(checkpoint["model_state"]["fc1.weight"], torch.from_numpy(model.kernels[0].T.copy()))
        average = checkpoint["optimizer_state"]["state"][0]["square_avg"]
        assert torch.equal(average, torch.from_numpy(model.optimizer.square_avgs[0].T.copy()))

    def test_the_checkpoint_predicts_what_the_keras_weights_compute(self, tmp_path, capsys):
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("dense", 16), _dense("d2", 10, "softmax")))
        model = read_keras_model(path)
        out = tmp_path / "c.pt"
        assert run_in_process(convert_main, ["--from-keras", path, "--out", out], capsys).returncode == 0
        from torch_mnist import build_model
        x = np.random.default_rng(1).random((5, 784)).astype(np.float32)
        hidden = np.maximum(x @ model.kernels[0] + model.biases[0], 0)
        expected = hidden @ model.kernels[1] + model.biases[1]
        logits = build_model(load_checkpoint(out))(torch.from_numpy(x)).detach().numpy()
        assert np.allclose(logits, expected, atol=1e-5)

    def test_without_optimizer_state_the_note_says_resume_starts_fresh(self, tmp_path, capsys):
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("dense", 16), _dense("d2", 10, "softmax")),
                             averages=False)
        result = run_in_process(convert_main, ["--from-keras", path, "--out", tmp_path / "c.pt"], capsys)
        assert result.returncode == 0
        assert "has no optimizer state" in result.stderr and "starts a fresh RMSprop" in result.stderr
        assert load_checkpoint(tmp_path / "c.pt")["optimizer_state"]["state"] == {}

    def test_resume_continues_from_the_keras_state(self, tmp_path, synthetic_root, capsys):
        from torch_mnist.commands.train import main as train_main
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("dense", 16), _dense("d2", 10, "softmax")))
        out = tmp_path / "c.pt"
        assert run_in_process(convert_main, ["--from-keras", path, "--out", out], capsys).returncode == 0
        before = load_checkpoint(out)
        result = run_in_process(train_main, ["--resume", out, "--epochs", "1", "--data-dir", synthetic_root,
                                             "--quiet", "--no-plots"], capsys)
        assert result.returncode == 0, result
        after = load_checkpoint(out)
        assert after["epoch"] == 1 and after["config"]["hidden"] == [16]
        assert not torch.equal(after["model_state"]["fc1.weight"], before["model_state"]["fc1.weight"])

    def test_a_flatten_of_28x28_and_dropout_after_every_hidden_layer(self, tmp_path):
        config = _sequential({"class_name": "Flatten", "config": {"name": "f"}}, _dense("a", 16),
                             {"class_name": "Dropout", "config": {"name": "x", "rate": 0.2}}, _dense("b", 12),
                             {"class_name": "Dropout", "config": {"name": "y", "rate": 0.2}},
                             _dense("c", 10, "linear"), {"class_name": "Activation",
                                                         "config": {"name": "z", "activation": "softmax"}},
                             shape=(None, 28, 28))
        model = read_keras_model(_write_keras3(tmp_path / "m.keras", config, widths=(784, 16, 12, 10)))
        assert model.hidden == (16, 12) and model.dropout == 0.2


def _family_error(tmp_path, capsys, config, message, widths=(784, 16, 10)):
    path = _write_keras3(tmp_path / "m.keras", config, widths)
    assert_one_line_error_in_process(convert_main, ["--from-keras", path, "--out", tmp_path / "c.pt"], capsys,
                                     message)
    assert not (tmp_path / "c.pt").exists() and not (tmp_path / "c.json").exists()


class TestRefused:
    @pytest.mark.parametrize("layer, message", [
        ({"class_name": "Conv2D", "config": {"name": "conv"}}, "unsupported layer Conv2D 'conv'"),
        ({"class_name": "Lambda", "config": {"name": "code", "function": "gASVAAAA"}}, "unsupported layer Lambda"),
        ({"class_name": "BatchNormalization", "config": {"name": "bn"}}, "unsupported layer BatchNormalization"),
    ])
    def test_the_first_layer_outside_the_family_is_named(self, tmp_path, capsys, layer, message):
        _family_error(tmp_path, capsys, _sequential(layer, _dense("dense", 16), _dense("d2", 10, "softmax")),
                      message)

    def test_another_activation(self, tmp_path, capsys):
        _family_error(tmp_path, capsys, _sequential(_dense("dense", 16, "tanh"), _dense("d2", 10, "softmax")),
                      "unsupported activation 'tanh'")

    def test_another_input_shape(self, tmp_path, capsys):
        _family_error(tmp_path, capsys, _sequential({"class_name": "Flatten", "config": {"name": "f"}},
                                                    _dense("dense", 16), _dense("d2", 10, "softmax"),
                                                    shape=(None, 32, 32, 3)), "unsupported input shape [32, 32, 3]")

    def test_a_branching_functional_model(self, tmp_path, capsys):
        def node(*names):
            return [{"args": [{"class_name": "__keras_tensor__", "config": {"keras_history": [n, 0, 0]}}
                              for n in names], "kwargs": {}}]
        config = {"class_name": "Functional", "config": {"name": "f", "layers": [
            {"class_name": "InputLayer", "name": "in", "config": {"name": "in", "batch_shape": [None, 784]},
             "inbound_nodes": []},
            {**_dense("dense", 16), "inbound_nodes": node("in")},
            {**_dense("d2", 10, "softmax"), "inbound_nodes": node("dense", "in")}]}}
        _family_error(tmp_path, capsys, config, "only a chain of layers converts")

    @pytest.mark.parametrize("content, message", [
        (b"", "not a Keras model file"),
        (b"hello, not a model", "not a Keras model file"),
        (b"PK\x03\x04truncated zip", "not a readable Keras model"),
        (b"\x89HDF\r\n\x1a\ntruncated", "not a readable Keras model"),
    ])
    def test_broken_and_foreign_files_are_one_line_and_nothing_is_written(self, tmp_path, capsys, content, message):
        (tmp_path / "m.keras").write_bytes(content)
        assert_one_line_error_in_process(convert_main, ["--from-keras", tmp_path / "m.keras", "--out",
                                                        tmp_path / "c.pt"], capsys, message)
        assert not (tmp_path / "c.pt").exists()

    def test_a_truncated_real_archive(self, tmp_path, capsys):
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("dense", 16), _dense("d2", 10, "softmax")))
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        assert_one_line_error_in_process(convert_main, ["--from-keras", path, "--out", tmp_path / "c.pt"], capsys,
                                         "not a readable Keras model")

    def test_an_h5_of_weights_alone(self, tmp_path, capsys):
        with h5py.File(tmp_path / "w.h5", "w") as h5:
            h5["dense/kernel"] = np.zeros((784, 10), np.float32)
        assert_one_line_error_in_process(convert_main, ["--from-keras", tmp_path / "w.h5", "--out",
                                                        tmp_path / "c.pt"], capsys, "without a Keras model_config")

    def test_weights_that_do_not_match_the_description(self, tmp_path, capsys):
        _family_error(tmp_path, capsys, _sequential(_dense("dense", 32), _dense("d2", 10, "softmax")),
                      "layers/dense/vars/0 has shape [784, 16] where the model needs [784, 32]")

    def test_an_output_that_is_the_input(self, tmp_path, capsys):
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("dense", 16), _dense("d2", 10, "softmax")))
        before = path.read_bytes()
        assert_one_line_error_in_process(convert_main, ["--from-keras", path, "--out", path], capsys,
                                         "is the same file as the input --from-keras")
        assert path.read_bytes() == before

    @pytest.mark.parametrize("args, message", [
        ([], "give --from-keras MODEL"),
        (["--checkpoint", "c.pt"], "--checkpoint needs --to-keras"),
        (["--checkpoint", "c.pt", "--to-keras", "m.h5"], "Keras 3 files end in .keras"),
        (["--from-keras", "m.keras", "--checkpoint", "c.pt"], "one of them"),
    ])
    def test_flags(self, capsys, args, message):
        assert_one_line_error_in_process(convert_main, args, capsys, message)


@pytest.fixture(scope="module")
def mnist(real_root):
    """The real MNIST as the reference program fed Keras: 784 pixels / 255, and integer labels."""
    from torch_mnist.data.mnist import load_mnist
    train, test = load_mnist(real_root, True), load_mnist(real_root, False)
    return ((train.data.numpy().reshape(-1, 784) / 255.0).astype(np.float32), train.targets.numpy(),
            (test.data.numpy().reshape(-1, 784) / 255.0).astype(np.float32), test.targets.numpy())


@pytest.mark.keras
@pytest.mark.slow
class TestRealKeras:
    """Models trained by real Keras 3 on the real MNIST files, and ours read back by Keras."""

    @pytest.mark.parametrize("program", ["seed program", "mnist_mlp"])
    @pytest.mark.parametrize("suffix", [".keras", ".h5"])
    def test_a_keras_trained_model_scores_as_keras_scored_it(self, mnist, real_root, tmp_path, capsys, program,
                                                              suffix):
        from torch_mnist.keras.parity import import_keras
        keras = import_keras()
        x, y, x_test, y_test = mnist
        keras.utils.set_random_seed(0)
        if program == "seed program":
            layers = [keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10, activation="softmax")]
        else:  # Keras' mnist_mlp example: two hidden layers with dropout
            layers = [keras.layers.Dense(512, activation="relu"), keras.layers.Dropout(0.2),
                      keras.layers.Dense(512, activation="relu"), keras.layers.Dropout(0.2),
                      keras.layers.Dense(10, activation="softmax")]
        model = keras.Sequential([keras.Input((784,)), *layers])
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
        model.fit(x[:12800], keras.utils.to_categorical(y[:12800], 10), epochs=1, batch_size=128, verbose=0)
        loss, accuracy = model.evaluate(x_test, keras.utils.to_categorical(y_test, 10), verbose=0)
        model.save(tmp_path / f"model{suffix}")
        converted = run_in_process(convert_main, ["--from-keras", tmp_path / f"model{suffix}", "--out",
                                                  tmp_path / "c.pt"], capsys)
        assert converted.returncode == 0 and "is carried over" in converted.stdout, converted
        scored = run_in_process(evaluate_main, ["--checkpoint", tmp_path / "c.pt", "--data-dir", real_root, "--json"],
                                capsys)
        ours = json.loads(scored.stdout)
        assert abs(ours["accuracy"] - accuracy) <= 1e-4 and abs(ours["loss"] - loss) <= 1e-3 * max(loss, 1)
        if suffix == ".keras" and program == "mnist_mlp":  # the converted checkpoint works everywhere ours do
            from PIL import Image
            from torch_mnist.commands.export import main as export_main
            from torch_mnist.commands.predict import main as predict_main
            Image.fromarray((x_test[0].reshape(28, 28) * 255).astype(np.uint8)).save(tmp_path / "seven.png")
            read = run_in_process(predict_main, ["--checkpoint", tmp_path / "c.pt", tmp_path / "seven.png", "--json"],
                                  capsys)
            assert read.returncode == 0 and json.loads(read.stdout)[0]["prediction"] == int(y_test[0])
            exported = run_in_process(export_main, ["--checkpoint", tmp_path / "c.pt", "--format", "pt2", "--out",
                                                    tmp_path / "c.pt2", "--data-dir", real_root], capsys)
            assert exported.returncode == 0 and "on 10,000 of 10,000" in exported.stdout

    def test_our_checkpoint_goes_out_as_a_keras_model_that_keras_scores_alike(self, mnist, trained_checkpoint,
                                                                              real_root, tmp_path, capsys):
        from torch_mnist.keras.parity import import_keras
        keras = import_keras()
        _, _, x_test, y_test = mnist
        out = tmp_path / "ours.keras"
        result = run_in_process(convert_main, ["--checkpoint", trained_checkpoint, "--to-keras", out], capsys)
        assert result.returncode == 0, result
        loss, accuracy = keras.saving.load_model(out).evaluate(x_test, keras.utils.to_categorical(y_test, 10),
                                                               verbose=0)
        ours = json.loads(run_in_process(evaluate_main, ["--checkpoint", trained_checkpoint, "--data-dir", real_root,
                                                         "--json"], capsys).stdout)
        assert abs(ours["accuracy"] - accuracy) <= 1e-4 and abs(ours["loss"] - loss) <= 1e-3 * max(loss, 1)
        # ... and it comes back: the same weights through our own reader
        back, mine = checkpoint_from_keras(read_keras_model(out)).checkpoint, load_checkpoint(trained_checkpoint)
        assert all(torch.equal(back["model_state"][name], mine["model_state"][name]) for name in mine["model_state"])
        for index, entry in mine["optimizer_state"]["state"].items():  # the RMSprop state travels too
            assert torch.equal(back["optimizer_state"]["state"][index]["square_avg"], entry["square_avg"])


@pytest.mark.keras
@pytest.mark.scripts
def test_our_keras_file_loads_compiled_in_keras_on_another_backend(trained_checkpoint, tmp_path, capsys):
    """Keras on JAX (or TensorFlow) cannot import the torch backend's optimizer class: the file names the
    public RMSprop, and carries the run's step count and square averages."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed here (pip install jax): Keras' JAX backend cannot be tried")
    out = tmp_path / "ours.keras"
    assert run_in_process(convert_main, ["--checkpoint", trained_checkpoint, "--to-keras", out], capsys).returncode == 0
    code = ("import keras, numpy as np, sys; m = keras.saving.load_model(sys.argv[1]); "
            "print(keras.backend.backend(), type(m.optimizer).__name__, int(np.asarray(m.optimizer.iterations)), "
            "sum(float(np.asarray(v).sum()) for v in m.optimizer.variables[2:]) > 0)")
    result = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr
    epochs = load_checkpoint(trained_checkpoint)["epoch"]
    assert result.stdout.split() == ["jax", "RMSprop", str(epochs * 469), "True"]
