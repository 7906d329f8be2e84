"""What a Keras file says, read as it says it (each Keras generation's RMSprop, per-layer dropout, a leading
Rescaling), and what a crafted file cannot make the reader do (recurse, allocate what it declares, read other
files): hand-written files in the fast tier, no Keras needed."""

import json
import os
import zipfile

import numpy as np
import pytest
import torch

from torch_mnist import TrainConfig, build_model, load_checkpoint
from torch_mnist.commands.convert import main as convert_main
from torch_mnist.keras.convert import checkpoint_from_keras, training_steps
from torch_mnist.keras.files import read_keras_model

from conftest import assert_one_line_error_in_process, run_in_process
from test_keras_convert import _dense, _sequential, _write_keras2_h5, _write_keras3

h5py = pytest.importorskip("h5py", reason="the keras extra is not installed: pip install -e '.[keras]'")


def _dropout(name, rate):
    return {"class_name": "Dropout", "config": {"name": name, "rate": rate}}


def _with(path, member, change):
    """``path``'s zip with ``member``'s JSON changed by ``change`` (a function of the parsed JSON)."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    value = json.loads(members[member])
    change(value)
    members[member] = json.dumps(value).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _error(tmp_path, capsys, path, *fragments):
    assert_one_line_error_in_process(convert_main, ["--from-keras", path, "--out", tmp_path / "c.pt"], capsys,
                                     *fragments)
    assert not (tmp_path / "c.pt").exists() and not (tmp_path / "c.json").exists()


class TestWhatTheFileSays:
    @pytest.mark.parametrize("version, legacy, placement", [
        ("2.4.0", None, "outside"), ("2.10.1", None, "outside"),  # Keras 2 before 2.11: the legacy RMSprop
        ("2.15.0", None, "inside"), ("2.21.0", None, "inside"),  # tf.keras since 2.11: optimizer="rmsprop"
        ("2.21.0", True, "outside"), ("2.21.0", False, "inside"), ("3.15.1", None, "inside")])
    def test_the_rmsprop_of_the_keras_that_wrote_it(self, tmp_path, version, legacy, placement):
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("dense", 16), _dense("d2", 10, "softmax")))

        def optimizer(config):  # optimizer="rmsprop" as the string tf.keras stores, or a flag
            config["compile_config"]["optimizer"] = "rmsprop" if legacy is None else {
                "class_name": "RMSprop", "config": {"is_legacy_optimizer": legacy}}
        _with(_with(path, "config.json", optimizer), "metadata.json", lambda m: m.update(keras_version=version))
        assert read_keras_model(path).optimizer.eps_placement == placement

    def test_both_files_of_one_tf_keras_model_read_alike(self, tmp_path):
        # tf.keras 2.21 saves optimizer="rmsprop" as a string in .keras, as is_legacy_optimizer: false in .h5
        keras_file = _write_keras3(tmp_path / "m.keras", _sequential(_dense("dense", 16), _dense("d2", 10, "softmax")))
        _with(keras_file, "config.json", lambda c: c["compile_config"].update(optimizer="rmsprop"))
        _with(keras_file, "metadata.json", lambda m: m.update(keras_version="2.21.0"))
        h5_file = _write_keras2_h5(tmp_path / "m.h5", legacy=False)
        with h5py.File(h5_file, "r+") as h5:
            h5.attrs["keras_version"] = "2.21.0"
        placements = {read_keras_model(path).optimizer.eps_placement for path in (keras_file, h5_file)}
        assert placements == {"inside"}

    def test_dropout_after_some_hidden_layers_only(self, tmp_path, capsys, synthetic_root):
        config = _sequential(_dense("a", 16), _dense("b", 12), _dropout("x", 0.3), _dense("c", 10, "softmax"))
        path = _write_keras3(tmp_path / "m.keras", config, widths=(784, 16, 12, 10))
        assert read_keras_model(path).dropout == (0.0, 0.3)
        result = run_in_process(convert_main, ["--from-keras", path, "--out", tmp_path / "c.pt"], capsys)
        assert result.returncode == 0, result.stderr
        checkpoint = load_checkpoint(tmp_path / "c.pt")
        assert checkpoint["config"]["dropout"] == [0.0, 0.3]
        assert build_model(checkpoint).dropout_rates == (0.0, 0.3)
        from torch_mnist.commands.train import main as train_main  # and the run continues with it
        result = run_in_process(train_main, ["--resume", tmp_path / "c.pt", "--epochs", "1", "--data-dir",
                                             synthetic_root, "--no-plots", "--quiet"], capsys)
        assert result.returncode == 0, result.stderr

    def test_a_leading_rescaling_is_our_standardize(self, tmp_path):
        standardize = TrainConfig(normalize="standardize")
        from torch_mnist.recipe import normalization_of
        norm = normalization_of(standardize)
        rescaling = {"class_name": "Rescaling", "config": {"name": "r", "scale": 1 / norm.std,
                                                            "offset": -norm.mean / norm.std}}
        path = _write_keras3(tmp_path / "m.keras", _sequential(rescaling, _dense("d", 16), _dense("e", 10, "softmax")))
        assert checkpoint_from_keras(read_keras_model(path)).checkpoint["config"]["normalize"] == "standardize"

    def test_another_rescaling_is_refused_by_its_values(self, tmp_path, capsys):
        rescaling = {"class_name": "Rescaling", "config": {"name": "r", "scale": 2.0, "offset": 0.0}}
        path = _write_keras3(tmp_path / "m.keras", _sequential(rescaling, _dense("d", 16), _dense("e", 10, "softmax")))
        _error(tmp_path, capsys, path, "Rescaling(scale=2.0, offset=0.0)")

    def test_the_step_count_of_a_checkpoint(self):
        checkpoint = {"config": TrainConfig(batch_size=128).to_dict(), "epoch": 3}
        assert training_steps(checkpoint) == 3 * 469


class TestMessagesNameTheFileAndField:
    @pytest.mark.parametrize("rate", [1.0, float("nan"), -0.1, "0.2"])
    def test_a_dropout_rate_outside_zero_to_one(self, tmp_path, capsys, rate):
        config = _sequential(_dense("a", 16), _dropout("drop", rate), _dense("c", 10, "softmax"))
        path = tmp_path / "m.keras"
        _write_keras3(path, config)
        _error(tmp_path, capsys, path, str(path), "Dropout 'drop' has rate", "a dropout rate is a number in [0, 1)")

    @pytest.mark.parametrize("field, value", [("learning_rate", -0.001), ("learning_rate", 1e300),
                                              ("rho", 1.5), ("epsilon", 0.0)])
    def test_rmsprop_settings_no_run_could_use(self, tmp_path, capsys, field, value):
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("a", 16), _dense("c", 10, "softmax")))
        _with(path, "config.json", lambda c: c["compile_config"]["optimizer"]["config"].update({field: value}))
        _error(tmp_path, capsys, path, str(path), f"the RMSprop {field} is {value!r}")

    def test_an_odd_keras_version(self, tmp_path, capsys):
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("a", 16), _dense("c", 10, "softmax")))
        _with(path, "metadata.json", lambda m: m.update(keras_version="banana"))
        _error(tmp_path, capsys, path, "metadata.json's keras_version is 'banana', not a Keras version")

    def test_a_step_count_that_is_no_integer(self, tmp_path, capsys):
        path = _write_keras2_h5(tmp_path / "m.h5")
        with h5py.File(path, "r+") as h5:
            del h5["optimizer_weights/RMSprop/iter:0"]
            h5["optimizer_weights/RMSprop/iter:0"] = "many"
        _error(tmp_path, capsys, path, "the optimizer's step count RMSprop/iter:0 holds", "not an integer")


class TestCraftedFiles:
    def test_a_description_nested_200000_deep(self, tmp_path, capsys):
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("a", 16), _dense("c", 10, "softmax")))
        _with(path, "config.json", lambda c: None)
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        members["config.json"] = b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        _error(tmp_path, capsys, path, "nests deeper than 100 levels")

    def test_an_h5_description_nested_deep(self, tmp_path, capsys):
        path = _write_keras2_h5(tmp_path / "m.h5")
        with h5py.File(path, "r+") as h5:
            h5.attrs["model_config"] = "[" * 200_000 + "]" * 200_000
        _error(tmp_path, capsys, path, "nests deeper than 100 levels")

    @pytest.mark.parametrize("kind", ["keras", "h5"])
    def test_a_declared_huge_kernel_is_refused_before_it_is_read(self, tmp_path, capsys, kind):
        # 784 x 2^26 float32 would be 196 GiB; stored sparse (chunked, never written) the file stays small
        units = 2 ** 26
        if kind == "keras":
            path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("a", 16), _dense("c", 10, "softmax")))
            _with(path, "config.json", lambda c: c["config"]["layers"][1]["config"].update(units=units))
        else:
            path = _write_keras2_h5(tmp_path / "m.h5")
            with h5py.File(path, "r+") as h5:
                config = json.loads(h5.attrs["model_config"])
                config["config"]["layers"][0]["config"]["units"] = units
                h5.attrs["model_config"] = json.dumps(config)
                del h5["model_weights/dense/dense/kernel:0"]
                h5.create_dataset("model_weights/dense/dense/kernel:0", shape=(784, units), dtype="f4",
                                  chunks=(784, 1024))
        assert path.stat().st_size < 10_000_000
        _error(tmp_path, capsys, path, f"declares {units} units")

    def test_a_kernel_shape_other_than_its_layer_is_not_read(self, tmp_path, capsys):
        path = _write_keras2_h5(tmp_path / "m.h5")
        with h5py.File(path, "r+") as h5:
            del h5["model_weights/dense/dense/kernel:0"]
            h5.create_dataset("model_weights/dense/dense/kernel:0", shape=(784, 2 ** 26), dtype="f4",
                              chunks=(784, 1024))
        _error(tmp_path, capsys, path, "has shape [784, 67108864] where the model needs [784, 16]")

    def test_a_zip_member_that_unpacks_beyond_what_its_model_needs(self, tmp_path, capsys):
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("a", 16), _dense("c", 10, "softmax")))
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        members["model.weights.h5"] += b"\0" * 300_000_000  # 300 MB of zeros deflate to ~300 kB
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        del members
        assert path.stat().st_size < 2_000_000
        _error(tmp_path, capsys, path, "model.weights.h5 declares", "more than a model of its description needs")

    @pytest.mark.parametrize("how", ["external", "external link", "soft link"])
    def test_weights_stored_elsewhere_are_refused(self, tmp_path, capsys, how):
        secret = tmp_path / "secret.bin"
        secret.write_bytes(os.urandom(784 * 16 * 4))
        path = _write_keras2_h5(tmp_path / "m.h5")
        with h5py.File(path, "r+") as h5:
            del h5["model_weights/dense/dense/kernel:0"]
            group = h5["model_weights/dense/dense"]
            if how == "external":
                group.create_dataset("kernel:0", shape=(784, 16), dtype="f4", external=[(str(secret), 0, 784 * 64)])
            elif how == "external link":
                with h5py.File(tmp_path / "other.h5", "w") as other:
                    other["k"] = np.zeros((784, 16), np.float32)
                group["kernel:0"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/k")
            else:
                h5["elsewhere"] = np.zeros((784, 16), np.float32)
                group["kernel:0"] = h5py.SoftLink("/elsewhere")
        _error(tmp_path, capsys, path, "refused")

    def test_control_characters_in_names_are_shown_escaped(self, tmp_path, capsys):
        layer = {"class_name": "Conv2D", "config": {"name": "x\x1b]0;owned\x07\nerror: forged"}}
        path = _write_keras3(tmp_path / "m.keras", _sequential(layer, _dense("a", 16), _dense("c", 10, "softmax")))
        _error(tmp_path, capsys, path, "unsupported layer Conv2D", "\\x1b]0;owned\\x07\\nerror: forged")


class TestOutputsOfTheirOwnKind:
    def test_a_text_file_is_not_replaced_by_a_checkpoint_or_its_history(self, tmp_path, capsys):
        path = _write_keras3(tmp_path / "m.keras", _sequential(_dense("a", 16), _dense("c", 10, "softmax")))
        notes = tmp_path / "notes.pt"
        notes.write_text("my notes")
        assert_one_line_error_in_process(convert_main, ["--from-keras", path, "--out", notes], capsys,
                                         "--out", "is not a checkpoint")
        assert notes.read_text() == "my notes"
        (tmp_path / "k.json").write_text('{"my": "settings"}')
        assert_one_line_error_in_process(convert_main, ["--from-keras", path, "--out", tmp_path / "k.pt"], capsys,
                                         "the history beside --out", "is not a run's JSON history")
        assert (tmp_path / "k.json").read_text() == '{"my": "settings"}' and not (tmp_path / "k.pt").exists()

    def test_a_text_file_is_not_replaced_by_a_keras_file(self, tmp_path, capsys, trained_tiny):
        notes = tmp_path / "notes.keras"
        notes.write_text("my notes")
        assert_one_line_error_in_process(convert_main, ["--checkpoint", trained_tiny, "--to-keras", notes], capsys,
                                         "--to-keras", "is not a Keras model")
        assert notes.read_text() == "my notes"


@pytest.fixture
def trained_tiny(tmp_path, synthetic_root):
    from torch_mnist import run_training
    run_training(TrainConfig(epochs=1), synthetic_root, torch.device("cpu"), tmp_path / "tiny.pt")
    return tmp_path / "tiny.pt"
