import warnings

import pytest
import torch

from torch_mnist import TrainConfig, UserError, evaluate, load_checkpoint, run_training
from torch_mnist.errors import Note
from torch_mnist.training.run import CheckpointWriter, resume_config

CPU = torch.device("cpu")


def _train(root, out, epochs, **overrides):
    return run_training(TrainConfig(epochs=epochs, **overrides), root, CPU, out)


class TestRunTraining:
    def test_resumed_run_equals_one_go_bit_for_bit(self, synthetic_root, tmp_path):
        one_go = _train(synthetic_root, tmp_path / "one.pt", 3)
        _train(synthetic_root, tmp_path / "split.pt", 1)
        checkpoint = load_checkpoint(tmp_path / "split.pt")
        resumed = run_training(resume_config(checkpoint, 3), synthetic_root, CPU, tmp_path / "split.pt",
                               resume=checkpoint)
        assert resumed.history == one_go.history
        final_one = load_checkpoint(tmp_path / "one.pt")["model_state"]
        final_split = load_checkpoint(tmp_path / "split.pt")["model_state"]
        assert all(torch.equal(final_one[k], final_split[k]) for k in final_one)

    def test_keras_initial_epoch_rule(self, synthetic_root, tmp_path):
        _train(synthetic_root, tmp_path / "ckpt.pt", 1)
        checkpoint = load_checkpoint(tmp_path / "ckpt.pt")
        run_training(resume_config(checkpoint, 2), synthetic_root, CPU, tmp_path / "ckpt.pt", resume=checkpoint)
        saved = load_checkpoint(tmp_path / "ckpt.pt")
        assert saved["epoch"] == 2 and len(saved["history"]["loss"]) == 2
        with pytest.raises(UserError, match="already trained 2 of 2 epochs"):
            resume_config(saved, 2)

    def test_resume_without_epochs_continues_to_the_runs_own_total(self, synthetic_root, tmp_path):
        class StopAfterOne(CheckpointWriter):
            def epoch_end(self, snapshot):
                super().epoch_end(snapshot)
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_training(TrainConfig(epochs=3), synthetic_root, CPU, tmp_path / "c.pt",
                         writer=StopAfterOne(tmp_path / "c.pt", save_every=1, epochs=3))
        assert resume_config(load_checkpoint(tmp_path / "c.pt")).epochs == 3

    def test_save_every_writes_during_the_run(self, synthetic_root, tmp_path):
        epochs_seen = []

        class Recorder(CheckpointWriter):
            def flush(self):
                if self.pending is not None:
                    epochs_seen.append(self.pending["epoch"])
                super().flush()

        run_training(TrainConfig(epochs=5), synthetic_root, CPU, tmp_path / "c.pt",
                     writer=Recorder(tmp_path / "c.pt", save_every=2, epochs=5))
        assert epochs_seen == [2, 4, 5]

    def test_interruption_keeps_the_last_complete_epoch(self, synthetic_root, tmp_path):
        out = tmp_path / "c.pt"

        class StopInEpochThree(CheckpointWriter):
            def epoch_end(self, snapshot):
                super().epoch_end(snapshot)
                if snapshot["epoch"] == 2:
                    raise KeyboardInterrupt  # as if Ctrl-C came right after epoch 2

        writer = StopInEpochThree(out, save_every=10, epochs=20)
        with pytest.raises(KeyboardInterrupt):
            run_training(TrainConfig(epochs=20), synthetic_root, CPU, out, writer=writer)
        assert writer.saved_epoch == 2 and load_checkpoint(out)["epoch"] == 2

    def test_both_loaders_give_the_same_history(self, synthetic_root, tmp_path):
        memory = _train(synthetic_root, tmp_path / "m.pt", 2, loader="memory")
        loader = _train(synthetic_root, tmp_path / "d.pt", 2, loader="dataloader")
        for key in memory.history:
            assert loader.history[key] == pytest.approx(memory.history[key], rel=1e-5)

    def test_keras3_semantics_run_and_are_recorded(self, synthetic_root, tmp_path):
        result = _train(synthetic_root, tmp_path / "k3.pt", 2, keras_semantics="keras3")
        assert result.history["val_accuracy"][-1] > 0.9
        saved = load_checkpoint(tmp_path / "k3.pt")
        assert saved["config"]["keras_semantics"] == "keras3"
        assert saved["optimizer_state"]["param_groups"][0]["eps_placement"] == "inside"


class TestVariants:
    # Compiled, dropout draws inside the graph (Inductor's own random numbers, seeded from torch's generator,
    # which the checkpoint keeps); uncompiled, the step's function draws op by op (see conftest).
    @pytest.mark.parametrize("step", ["uncompiled", pytest.param("compiled", marks=pytest.mark.compile)])
    def test_two_hidden_layers_with_dropout_resume_bit_for_bit(self, synthetic_root, tmp_path, step):
        variant = dict(hidden=(64, 64), dropout=0.2)
        one_go = _train(synthetic_root, tmp_path / "one.pt", 3, **variant)
        _train(synthetic_root, tmp_path / "split.pt", 1, **variant)
        checkpoint = load_checkpoint(tmp_path / "split.pt")
        assert checkpoint["config"]["hidden"] == [64, 64] and checkpoint["config"]["dropout"] == 0.2
        assert checkpoint["model_state"]["fc2.weight"].shape == (64, 64)
        resumed = run_training(resume_config(checkpoint, 3), synthetic_root, CPU, tmp_path / "split.pt",
                               resume=checkpoint)
        assert resumed.history == one_go.history


class TestSpeedOptions:
    @pytest.mark.compile
    def test_compiled_run_follows_the_eager_run_and_resumes_bit_for_bit(self, synthetic_root, tmp_path):
        eager = _train(synthetic_root, tmp_path / "eager.pt", 2, compile=False).history
        with warnings.catch_warnings():
            warnings.simplefilter("error", Note)  # it compiled: no fallback note
            compiled = _train(synthetic_root, tmp_path / "compiled.pt", 2).history
        for key in eager:  # same batches and formula; the compiled graph rounds differently in the last bits
            assert compiled[key] == pytest.approx(eager[key], rel=1e-4)
        assert compiled != eager  # it was not the eager step
        saved = load_checkpoint(tmp_path / "compiled.pt")
        assert saved["config"]["compile"] is True
        assert set(saved["model_state"]) == set(load_checkpoint(tmp_path / "eager.pt")["model_state"])
        _train(synthetic_root, tmp_path / "split.pt", 1)
        checkpoint = load_checkpoint(tmp_path / "split.pt")
        resumed = run_training(resume_config(checkpoint, 2), synthetic_root, CPU, tmp_path / "split.pt",
                               resume=checkpoint)
        assert resumed.history == compiled

    @pytest.mark.filterwarnings("ignore::torch_mnist.errors.Note")  # this CPU's bf16 note: the next test
    def test_bf16_run_is_recorded_validates_in_float32_and_resumes_bit_for_bit(self, synthetic_root, tmp_path):
        result = _train(synthetic_root, tmp_path / "amp.pt", 2, amp="bf16")
        assert load_checkpoint(tmp_path / "amp.pt")["config"]["amp"] == "bf16"
        assert result.history["val_accuracy"][-1] > 0.9
        # The saved float32 weights give the logged validation figures (through the run's own kernels).
        from torch_mnist.training.onednn import linear_layers_through_onednn
        with linear_layers_through_onednn():
            assert evaluate(result.model, result.test_batches, CPU)["loss"] == result.history["val_loss"][-1]
        _train(synthetic_root, tmp_path / "split.pt", 1, amp="bf16")
        checkpoint = load_checkpoint(tmp_path / "split.pt")
        resumed = run_training(resume_config(checkpoint, 2), synthetic_root, CPU, tmp_path / "split.pt",
                               resume=checkpoint)
        assert resumed.history == result.history

    @pytest.mark.parametrize("native, notes", [(False, 1), (True, 0), (None, 0)])
    def test_bf16_on_a_cpu_without_bf16_arithmetic_says_so(self, synthetic_root, tmp_path, monkeypatch,
                                                         native, notes):
        monkeypatch.setattr("torch_mnist.training.run.native_bf16_cpu", lambda: native)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _train(synthetic_root, tmp_path / "amp.pt", 1, amp="bf16")
        said = [str(w.message) for w in caught if issubclass(w.category, Note)]
        assert len(said) == notes
        assert all("no bfloat16 arithmetic (AVX512-BF16 or AMX)" in line for line in said)

    def test_where_the_step_cannot_be_compiled_the_run_trains_eagerly_with_one_note(self, synthetic_root, tmp_path,
                                                                                   monkeypatch):
        def cannot_compile():
            def run(*args):
                raise RuntimeError("InductorError: CppCompileError: C++ compile error\n<long compiler log>")
            return run
        monkeypatch.setattr("torch_mnist.training.compiled._new_compiled_step", cannot_compile)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fallen_back = _train(synthetic_root, tmp_path / "c.pt", 2).history
        said = [str(w.message) for w in caught if issubclass(w.category, Note)]
        assert len(said) == 1 and "\n" not in said[0]
        assert "cannot be compiled here (InductorError: CppCompileError: C++ compile error)" in said[0]
        assert "training eagerly" in said[0]
        # From the first step on it was the eager run, to the bit.
        assert fallen_back == _train(synthetic_root, tmp_path / "e.pt", 2, compile=False).history
