import copy
import os
import pickle
import re

import pytest
import torch

from torch_mnist import MLP, RMSprop, TrainConfig, UserError, build_model, load_checkpoint, save_checkpoint
from torch_mnist.training.checkpoint import make_checkpoint
from torch_mnist.errors import Note

from conftest import save_with_digest


def _checkpoint(hidden=512):
    model = MLP(hidden=hidden)
    optimizer = RMSprop(model.parameters())
    model(torch.rand(4, 784)).sum().backward()
    optimizer.step()
    history = {"loss": [0.3], "accuracy": [0.9], "val_loss": [0.2], "val_accuracy": [0.95]}
    return model, make_checkpoint(model, optimizer, TrainConfig(hidden=hidden, epochs=1), 1, history,
                                  torch.Generator().manual_seed(0))


def _version_1(checkpoint):
    """The same checkpoint as torch_mnist 0.1 wrote it: architecture and normalization stored too."""
    config = checkpoint["config"]
    return {**checkpoint, "format_version": 1, "normalization": {"name": "scale", "mean": 0.0, "std": 1.0},
            "architecture": {"in_features": 784, "hidden": list(config["hidden"]), "num_classes": 10,
                             "dropout": config["dropout"]}}


class Payload:
    """Unpickling this runs os.system, as a malicious checkpoint would."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class TestSaveLoad:
    def test_round_trip_gives_identical_predictions(self, tmp_path):
        model, checkpoint = _checkpoint()
        save_checkpoint(checkpoint, tmp_path / "ckpt.pt")
        rebuilt = build_model(load_checkpoint(tmp_path / "ckpt.pt"))
        images = torch.rand(16, 784)
        assert torch.equal(rebuilt(images), model.eval()(images))

    def test_plain_torch_load_with_weights_only_reads_it(self, tmp_path):
        _, checkpoint = _checkpoint()
        save_checkpoint(checkpoint, tmp_path / "ckpt.pt")
        loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)
        assert loaded["config"]["lr"] == 1e-3 and loaded["epoch"] == 1
        assert (tmp_path / "ckpt.json").is_file()

    def test_other_hidden_size_rebuilds(self, tmp_path):
        _, checkpoint = _checkpoint(hidden=64)
        save_checkpoint(checkpoint, tmp_path / "small.pt")
        assert build_model(load_checkpoint(tmp_path / "small.pt")).fc1.weight.shape == (64, 784)


class TestRefusals:
    def test_code_carrying_pickle_is_refused_and_never_runs(self, tmp_path):
        marker = tmp_path / "pwned"
        path = tmp_path / "evil.pt"
        torch.save({"format": "torch_mnist.training.checkpoint", "payload": Payload(marker)}, path)
        with pytest.raises(UserError, match="refused: it holds Python objects that could run code"):
            load_checkpoint(path)
        assert not marker.exists()

    def test_raw_pickle_payload_is_refused(self, tmp_path):
        marker = tmp_path / "pwned"
        path = tmp_path / "evil.pt"
        path.write_bytes(pickle.dumps(Payload(marker)))
        with pytest.raises(UserError, match=str(path)):
            load_checkpoint(path)
        assert not marker.exists()

    def test_weights_of_another_size_are_refused(self, tmp_path):
        _, checkpoint = _checkpoint(hidden=64)
        checkpoint["config"]["hidden"] = [512]  # weights of 64 units, configured as 512
        save_with_digest(checkpoint, tmp_path / "odd.pt")
        with pytest.raises(UserError, match=r"fc1.weight has shape \(64, 784\), but the configured model "
                                            r"\(hidden \[512\]\) needs \(512, 784\)"):
            load_checkpoint(tmp_path / "odd.pt")

    def test_a_huge_configured_model_is_refused_before_anything_is_allocated(self, tmp_path):
        _, checkpoint = _checkpoint(hidden=64)
        checkpoint["config"]["hidden"] = [10 ** 12]  # 784 * 10**12 floats: it would never fit
        save_with_digest(checkpoint, tmp_path / "huge.pt")
        with pytest.raises(UserError, match=r"invalid configuration in checkpoint: --hidden must be 1 to 64 layer "
                                            r"widths from 1 to 65536"):
            load_checkpoint(tmp_path / "huge.pt")
        checkpoint["config"]["hidden"] = [65536] * 64  # within bounds, but not what the weights are
        save_with_digest(checkpoint, tmp_path / "large.pt")
        with pytest.raises(UserError, match=r"the weights do not match the configured model \(hidden 65536, "
                                            r"65536, 65536, 65536 and 60 more\): missing fc10.bias, fc10.weight, "
                                            r"fc11.bias and 123 more, unexpected none$"):
            load_checkpoint(tmp_path / "large.pt")

    def test_version_1_checkpoints_still_load(self, tmp_path):
        model, checkpoint = _checkpoint(hidden=64)
        torch.save(_version_1(checkpoint), tmp_path / "old.pt")
        with pytest.warns(Note, match="without a digest: its contents cannot be verified"):
            loaded = load_checkpoint(tmp_path / "old.pt")
        assert "architecture" not in loaded and "normalization" not in loaded  # derived from the config now
        images = torch.rand(8, 784)
        assert torch.equal(build_model(loaded)(images), model.eval()(images))

    @pytest.mark.parametrize("key, value, message", [
        ("architecture", {"in_features": 784, "hidden": [32], "num_classes": 10, "dropout": 0.0},
         "its architecture .* disagrees with its configuration"),
        ("normalization", {"name": "standardize", "mean": 0.1307, "std": 0.3081},
         "its normalization .* disagrees with its configuration"),
    ])
    def test_version_1_keys_that_disagree_with_the_config_are_refused(self, tmp_path, key, value, message):
        _, checkpoint = _checkpoint(hidden=64)
        old = _version_1(checkpoint)
        old[key] = value
        torch.save(old, tmp_path / "old.pt")
        with pytest.raises(UserError, match=message), pytest.warns(Note):
            load_checkpoint(tmp_path / "old.pt")

    def test_foreign_state_dict_is_refused(self, tmp_path):
        torch.save(MLP().state_dict(), tmp_path / "weights.pt")
        with pytest.raises(UserError, match="not a torch_mnist checkpoint"):
            load_checkpoint(tmp_path / "weights.pt")

    def test_newer_format_is_refused(self, tmp_path):
        _, checkpoint = _checkpoint()
        checkpoint["format_version"] = 99
        save_with_digest(checkpoint, tmp_path / "new.pt")
        with pytest.raises(UserError, match="format version 99 is not supported"):
            load_checkpoint(tmp_path / "new.pt")

    def test_missing_keys_are_named(self, tmp_path):
        _, checkpoint = _checkpoint()
        del checkpoint["optimizer_state"]
        save_with_digest(checkpoint, tmp_path / "partial.pt")
        with pytest.raises(UserError, match="lacks optimizer_state"):
            load_checkpoint(tmp_path / "partial.pt")

    @pytest.mark.parametrize("kind, message", [
        ("missing", "no such checkpoint file"),
        ("directory", "is a directory"),
        ("empty", "empty file"),
        ("text", "a text file, not a checkpoint: pass the .pt file that train.py writes$"),
        ("json", r"a JSON history, not a checkpoint: pass .*ckpt\.pt, the checkpoint written beside it$"),
        ("json named .pt", r"a JSON history \(named like a checkpoint\), not a checkpoint: pass the \.pt file "
                           "train.py wrote$"),
        ("binary", "not a readable checkpoint: neither a torch file nor text$"),
        ("truncated", "not a readable checkpoint: the file is truncated or corrupted$"),
    ])
    def test_unusable_files(self, tmp_path, kind, message):
        path = tmp_path / ("ckpt.json" if kind == "json" else "ckpt.pt")
        if kind == "json":
            _, checkpoint = _checkpoint()
            save_checkpoint(checkpoint, tmp_path / "ckpt.pt")  # ckpt.json is its history
        elif kind == "json named .pt":
            _, checkpoint = _checkpoint()
            save_checkpoint(checkpoint, tmp_path / "real.pt")
            (tmp_path / "real.json").rename(path)  # a history renamed hist.pt: "pass ckpt.pt" would be no help
        elif kind == "binary":
            path.write_bytes(bytes(range(256)) * 4)
        elif kind == "directory":
            path.mkdir()
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "text":
            path.write_text("hello, I am not a checkpoint\n")
        elif kind == "truncated":
            _, checkpoint = _checkpoint()
            save_checkpoint(checkpoint, path)
            path.write_bytes(path.read_bytes()[:5000])
        with pytest.raises(UserError, match=message) as error:
            load_checkpoint(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
        said = str(error.value).replace(str(path.with_suffix(".pt")), "").replace(str(path), "")
        assert "weights_only" not in said and len(said) < 120  # a short clause, no torch internals


def test_an_unreadable_checkpoint_says_so(tmp_path, monkeypatch):
    import builtins
    _, checkpoint = _checkpoint()
    save_checkpoint(checkpoint, tmp_path / "ckpt.pt")
    real_open, locked = builtins.open, str(tmp_path / "ckpt.pt")

    def open_refusing_it(path, *args, **kwargs):  # as chmod 000 does to anyone but root
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_refusing_it)
    with pytest.raises(UserError, match=f"^{re.escape(locked)}: cannot be read \\(Permission denied\\)$"):
        load_checkpoint(tmp_path / "ckpt.pt")


class TestDamage:
    def _saved(self, tmp_path):
        _, checkpoint = _checkpoint(hidden=64)
        save_checkpoint(checkpoint, tmp_path / "ckpt.pt")
        return tmp_path / "ckpt.pt"

    def test_an_overwritten_byte_in_a_weight_is_noticed(self, tmp_path):
        path = self._saved(tmp_path)
        data = bytearray(path.read_bytes())
        weight = torch.load(path, weights_only=True)["model_state"]["fc1.weight"]
        offset = data.find(weight.flatten()[:4].numpy().tobytes())  # the tensor's bytes, inside the zip
        assert offset > 0
        data[offset + 2] ^= 0x01  # one flipped bit in the first weight: torch loads it without complaint
        path.write_bytes(bytes(data))
        assert not torch.equal(torch.load(path, weights_only=True)["model_state"]["fc1.weight"], weight)
        with pytest.raises(UserError, match="damaged: its contents differ from the digest recorded when it was "
                                            "saved"):
            load_checkpoint(path)

    def test_the_digest_covers_every_field(self, tmp_path):
        from torch_mnist.training.integrity import content_digest
        _, checkpoint = _checkpoint(hidden=64)
        reference = content_digest(checkpoint)
        changed = dict(checkpoint, epoch=2)
        assert content_digest(changed) != reference
        history = {**checkpoint["history"], "loss": [0.30000000000000004]}  # the last bit of a figure
        assert content_digest(dict(checkpoint, history=history)) != reference
        optimizer_state = copy.deepcopy(checkpoint["optimizer_state"])
        optimizer_state["state"][0]["square_avg"][0, 0] += 1e-9
        assert content_digest(dict(checkpoint, optimizer_state=optimizer_state)) != reference

    @pytest.mark.parametrize("field, value, message", [
        ("epoch", -1, "epoch -1 is not a count of epochs between 0 and the run's 1"),
        ("epoch", "1", "epoch '1' is not a count of epochs"),
        ("epoch", 5, "epoch 5 is not a count of epochs between 0 and the run's 1"),
        ("history", {"loss": [0.1]}, "the history is not 1 finite figures for each of"),
        ("history", {"loss": ["x"], "accuracy": [1], "val_loss": [1], "val_accuracy": [1]}, "the history is not"),
        ("history", {"loss": [float("nan")], "accuracy": [1], "val_loss": [1], "val_accuracy": [1]},
         "the history is not"),
        ("optimizer_state", {}, "optimizer_state is not RMSprop's state for this model"),
        ("optimizer_state", "nothing", "optimizer_state is not RMSprop's state for this model"),
        ("rng_state", torch.zeros(3, dtype=torch.uint8), "rng_state is not a random generator's state"),
        ("torch_rng_state", [1, 2], "torch_rng_state is not a random generator's state"),
        ("config", "hello", "invalid configuration in checkpoint: a configuration is a mapping"),
        ("config", {"lr": "fast"}, "invalid configuration in checkpoint: --lr must be a positive number"),
        ("model_state", [1, 2], "model_state is a list, not the model's weights by name"),
    ])
    def test_right_keys_with_wrong_values_are_refused(self, tmp_path, field, value, message):
        _, checkpoint = _checkpoint(hidden=64)
        if field == "config" and isinstance(value, dict):
            value = {**checkpoint["config"], **value}
        save_with_digest({**checkpoint, field: value}, tmp_path / "odd.pt")
        with pytest.raises(UserError, match=re.escape(message)):
            load_checkpoint(tmp_path / "odd.pt")

    @pytest.mark.parametrize("change, message", [
        (lambda state: state["param_groups"][0].update(lr=0.5), "optimizer_state's hyperparameters"),
        (lambda state: state["state"][0].update(square_avg=torch.zeros(3)), "no usable squared-gradient average"),
        (lambda state: state["state"].update({7: {"square_avg": torch.zeros(3)}}), "for parameter 7"),
    ])
    def test_an_optimizer_state_that_does_not_fit_is_refused(self, tmp_path, change, message):
        _, checkpoint = _checkpoint(hidden=64)
        change(checkpoint["optimizer_state"])
        save_with_digest(checkpoint, tmp_path / "odd.pt")
        with pytest.raises(UserError, match=re.escape(message)):
            load_checkpoint(tmp_path / "odd.pt")


def test_the_format_name_every_written_checkpoint_carries_is_unchanged(tmp_path):
    # Checkpoints on users' disks say this; a rename of the module must never rename the format.
    from torch_mnist.training.checkpoint import FORMAT
    assert FORMAT == "torch_mnist.checkpoint"
