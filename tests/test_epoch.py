import math

import pytest
import torch

from torch_mnist import (MLP, InMemoryBatches, RMSprop, decode, evaluate, load_mnist, new_history, record_epoch,
                         train_one_epoch)
from torch_mnist.data.mnist import Normalization
from torch_mnist.training.epoch import EpochMeter, NonFiniteLossError
from torch_mnist.model.losses import cross_entropy

CPU = torch.device("cpu")


def _splits(root):
    scale = Normalization.named("scale")
    return decode(load_mnist(root, True), scale, CPU), decode(load_mnist(root, False), scale, CPU)


def _model_and_optimizer(seed=0, lr=1e-3):
    model = MLP(generator=torch.Generator().manual_seed(seed))
    return model, RMSprop(model.parameters(), lr=lr)


class TestTrainOneEpoch:
    def test_epoch_figures_are_sample_weighted_means_of_the_steps(self, synthetic_root):
        train_set, _ = _splits(synthetic_root)
        model, optimizer = _model_and_optimizer()
        reference_model, reference_optimizer = _model_and_optimizer()
        metrics = train_one_epoch(model, InMemoryBatches(train_set, 128, torch.Generator().manual_seed(1)),
                                  optimizer, CPU)
        # The same epoch, reading loss and accuracy from every step as a naive loop would.
        loss_sum = correct = count = 0
        for images, labels in InMemoryBatches(train_set, 128, torch.Generator().manual_seed(1)):
            reference_optimizer.zero_grad()
            logits = reference_model(images)
            loss = cross_entropy(logits, labels)
            loss.backward()
            reference_optimizer.step()
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            count += len(labels)
        assert count == 600  # 4 batches of 128 and a ragged one of 88
        assert metrics["loss"] == pytest.approx(loss_sum / count, rel=1e-6)
        assert metrics["accuracy"] == correct / count

    def test_bf16_autocast_runs_the_forward_in_bf16_and_keeps_float32_weights(self, synthetic_root):
        train_set, _ = _splits(synthetic_root)
        model, optimizer = _model_and_optimizer()
        seen = set()
        model.fc1.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
        batches = InMemoryBatches(train_set, 128, torch.Generator().manual_seed(1))
        metrics = train_one_epoch(model, batches, optimizer, CPU, autocast_dtype=torch.bfloat16)
        assert seen == {torch.bfloat16}
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert all(v["square_avg"].dtype == torch.float32 for v in optimizer.state.values())
        assert 0 < metrics["loss"] < 2.3 and metrics["accuracy"] > 0.5  # it learns like the float32 run
        train_one_epoch(model, batches, optimizer, CPU)  # and without autocast, float32 again
        assert seen == {torch.bfloat16, torch.float32}

    def test_non_finite_loss_stops_with_epoch_and_step(self, synthetic_root):
        train_set, _ = _splits(synthetic_root)
        model, optimizer = _model_and_optimizer(lr=1e20)  # RMSprop steps ~lr: logits overflow float32
        with pytest.raises(NonFiniteLossError) as error:
            train_one_epoch(model, InMemoryBatches(train_set, 32, torch.Generator().manual_seed(0)),
                            optimizer, CPU, epoch=3)
        assert error.value.epoch == 3 and 1 <= error.value.step <= 19
        assert "epoch 3, step" in str(error.value) and "--lr" in str(error.value)

    def test_meter_reads_weighted_means_and_the_first_bad_step_at_once(self):
        meter = EpochMeter(CPU)
        for step, (value, size) in enumerate([(1.0, 4), (2.0, 4), (float("nan"), 4), (3.0, 2)]):
            meter.record(step, torch.tensor(value), torch.tensor(size), size)
            if step == 1:
                assert meter.read() == {"loss": 1.5, "accuracy": 1.0, "non_finite_step": 0}
        assert meter.read()["non_finite_step"] == 3
        with pytest.raises(NonFiniteLossError, match="the loss became nan at epoch 7, step 3"):
            raise meter.non_finite_error(7, 3)
        assert meter.step_losses()[[0, 1, 3]].tolist() == [1.0, 2.0, 3.0]
        with pytest.raises(ValueError, match="step 5 recorded after 4 steps"):
            meter.record(5, torch.tensor(1.0), torch.tensor(1), 1)

    def test_an_empty_meter_reads_no_figures(self):
        figures = EpochMeter(CPU).read()
        assert figures["non_finite_step"] == 0 and math.isnan(figures["loss"]) and math.isnan(figures["accuracy"])

    def test_under_ddp_a_bad_step_is_reported_not_raised(self, synthetic_root):
        train_set, _ = _splits(synthetic_root)
        model, optimizer = _model_and_optimizer(lr=1e20)
        figures = train_one_epoch(model, InMemoryBatches(train_set, 32, torch.Generator().manual_seed(0)),
                                  optimizer, CPU, stop_on_non_finite=False)
        assert 1 <= figures["non_finite_step"] <= 19  # the ranks decide together, after the epoch


class TestEvaluate:
    def test_exact_over_ragged_batches(self, synthetic_root):
        _, test_set = _splits(synthetic_root)
        model, _ = _model_and_optimizer()
        metrics = evaluate(model, InMemoryBatches(test_set, 64), CPU)  # 64+64+64+8
        with torch.no_grad():
            logits = model(test_set.images)
        assert metrics["loss"] == pytest.approx(cross_entropy(logits, test_set.labels).item(), rel=1e-6)
        assert metrics["accuracy"] == (logits.argmax(1) == test_set.labels).sum().item() / 200

    def test_eval_mode_restored_and_no_random_numbers_drawn(self, synthetic_root):
        _, test_set = _splits(synthetic_root)
        model = MLP(dropout=0.5)  # in train mode its forward would draw from torch's generator
        state = torch.get_rng_state()
        first = evaluate(model, InMemoryBatches(test_set, 64), CPU)
        assert model.training and torch.equal(torch.get_rng_state(), state)
        assert evaluate(model, InMemoryBatches(test_set, 64), CPU) == first

    def test_kept_predictions_match_the_figures(self, synthetic_root):
        _, test_set = _splits(synthetic_root)
        model, _ = _model_and_optimizer()
        metrics = evaluate(model, InMemoryBatches(test_set, 64), CPU, keep_predictions=True)
        assert torch.equal(metrics["labels"], test_set.labels)
        assert metrics["accuracy"] == (metrics["predicted"] == metrics["labels"]).sum().item() / 200


class TestYourOwnLoop:
    """The pieces in a loop of one's own, as the README and the walkthrough show it."""

    def _fit(self, root, epochs=3, seed=0):
        train_set, test_set = _splits(root)
        model, optimizer = _model_and_optimizer(seed)
        train_batches = InMemoryBatches(train_set, 128, torch.Generator().manual_seed(seed))
        history = new_history()
        for _ in range(epochs):
            train = train_one_epoch(model, train_batches, optimizer, CPU)
            record_epoch(history, train, evaluate(model, InMemoryBatches(test_set, 128), CPU))
        return history

    def test_history_has_keras_shape(self, synthetic_root):
        history = self._fit(synthetic_root)
        assert list(history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
        assert all(len(values) == 3 for values in history.values())

    def test_the_net_learns(self, synthetic_root):
        history = self._fit(synthetic_root, epochs=4)
        assert history["loss"][-1] < history["loss"][0] / 3
        assert history["val_accuracy"][-1] > 0.95

    def test_same_seed_same_history(self, synthetic_root):
        assert self._fit(synthetic_root) == self._fit(synthetic_root)
        assert self._fit(synthetic_root) != self._fit(synthetic_root, seed=1)
