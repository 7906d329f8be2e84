import os
import pickle

import pytest
import torch

from torch_mnist import MLP, RMSprop, TrainConfig, UserError, build_model, load_checkpoint, save_checkpoint
from torch_mnist.checkpoint import make_checkpoint


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
        torch.save({"format": "torch_mnist.checkpoint", "payload": Payload(marker)}, path)
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
        torch.save(checkpoint, tmp_path / "odd.pt")
        with pytest.raises(UserError, match=r"fc1.weight has shape \(64, 784\), but the configured model "
                                            r"\(hidden \[512\]\) needs \(512, 784\)"):
            load_checkpoint(tmp_path / "odd.pt")

    def test_a_huge_configured_model_is_refused_before_anything_is_allocated(self, tmp_path):
        _, checkpoint = _checkpoint(hidden=64)
        checkpoint["config"]["hidden"] = [10 ** 12]  # 784 * 10**12 floats: it would never fit
        torch.save(checkpoint, tmp_path / "huge.pt")
        with pytest.raises(UserError, match=r"needs \(1000000000000, 784\)"):
            load_checkpoint(tmp_path / "huge.pt")

    def test_version_1_checkpoints_still_load(self, tmp_path):
        model, checkpoint = _checkpoint(hidden=64)
        torch.save(_version_1(checkpoint), tmp_path / "old.pt")
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
        with pytest.raises(UserError, match=message):
            load_checkpoint(tmp_path / "old.pt")

    def test_foreign_state_dict_is_refused(self, tmp_path):
        torch.save(MLP().state_dict(), tmp_path / "weights.pt")
        with pytest.raises(UserError, match="not a torch_mnist checkpoint"):
            load_checkpoint(tmp_path / "weights.pt")

    def test_newer_format_is_refused(self, tmp_path):
        _, checkpoint = _checkpoint()
        checkpoint["format_version"] = 99
        torch.save(checkpoint, tmp_path / "new.pt")
        with pytest.raises(UserError, match="format version 99 is not supported"):
            load_checkpoint(tmp_path / "new.pt")

    def test_missing_keys_are_named(self, tmp_path):
        _, checkpoint = _checkpoint()
        del checkpoint["optimizer_state"]
        torch.save(checkpoint, tmp_path / "partial.pt")
        with pytest.raises(UserError, match="lacks optimizer_state"):
            load_checkpoint(tmp_path / "partial.pt")

    @pytest.mark.parametrize("kind, message", [
        ("missing", "no such checkpoint file"),
        ("directory", "is a directory"),
        ("empty", "empty file"),
        ("text", "a text file, not a checkpoint: pass the .pt file that train.py writes$"),
        ("json", r"a JSON history, not a checkpoint: pass .*ckpt\.pt, the checkpoint written beside it$"),
        ("binary", "not a readable checkpoint: neither a torch file nor text$"),
        ("truncated", "not a readable checkpoint: the file is truncated or corrupted$"),
    ])
    def test_unusable_files(self, tmp_path, kind, message):
        path = tmp_path / ("ckpt.json" if kind == "json" else "ckpt.pt")
        if kind == "json":
            _, checkpoint = _checkpoint()
            save_checkpoint(checkpoint, tmp_path / "ckpt.pt")  # ckpt.json is its history
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
