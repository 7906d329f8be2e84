"""Parity with real Keras 3 (torch backend): same weights, same batches, same arithmetic."""

import os

import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
if not os.environ.get("CI"):  # CI installs the extra: there a missing Keras is an error, not a skip
    pytest.importorskip("keras", reason="the parity extra is not installed: pip install -e '.[parity]'")

from torch_mnist import MLP, InMemoryBatches, Normalization, RMSprop, decode, evaluate, load_mnist  # noqa: E402
from torch_mnist.engine import make_loss_fn, train_one_epoch  # noqa: E402
from torch_mnist.keras_parity import (keras_parameters, keras_reference_model, largest_difference,  # noqa: E402
                                      one_hot)

CPU = torch.device("cpu")
STEPS = 100


@pytest.fixture(scope="module")
def mnist(real_root):
    scale = Normalization.named("scale")
    return decode(load_mnist(real_root, True), scale, CPU), decode(load_mnist(real_root, False), scale, CPU)


def _keras3_pair(seed=0):
    model = MLP(generator=torch.Generator().manual_seed(seed))
    optimizer = RMSprop(model.parameters(), eps_placement="inside")
    return model, optimizer, keras_reference_model(model)


def test_parameters_agree_after_100_steps_in_keras3_semantics(mnist):
    train_set, _ = mnist
    model, optimizer, reference = _keras3_pair()
    loss_fn = make_loss_fn(clip_probabilities=True)
    batches = iter(InMemoryBatches(train_set, 128, torch.Generator().manual_seed(0)))
    for _ in range(STEPS):
        images, labels = next(batches)
        optimizer.zero_grad()
        loss_fn(model(images), labels).backward()
        optimizer.step()
        reference.train_on_batch(images.numpy(), one_hot(labels))
    worst = largest_difference(dict(model.named_parameters()), keras_parameters(reference))
    assert worst["difference"] <= 1e-5, f"after {STEPS} steps the largest difference is {worst}"


def test_epoch_bookkeeping_equals_keras_history(mnist):
    train_set, test_set = mnist
    model, optimizer, reference = _keras3_pair(seed=1)
    subset = type(train_set)(train_set.images[:3000], train_set.labels[:3000])  # 23 full batches + 56
    history = reference.fit(subset.images.numpy(), one_hot(subset.labels), batch_size=128, epochs=1,
                            shuffle=False, verbose=0,
                            validation_data=(test_set.images.numpy(), one_hot(test_set.labels))).history
    loss_fn = make_loss_fn(clip_probabilities=True)
    ours = train_one_epoch(model, InMemoryBatches(subset, 128), optimizer, CPU, loss_fn)
    val = evaluate(model, InMemoryBatches(test_set, 128), CPU, loss_fn)
    assert ours["loss"] == pytest.approx(history["loss"][0], rel=1e-5)
    assert ours["accuracy"] == pytest.approx(history["accuracy"][0], abs=1e-6)
    assert val["loss"] == pytest.approx(history["val_loss"][0], rel=1e-5)
    assert val["accuracy"] == pytest.approx(history["val_accuracy"][0], abs=1e-6)


def test_largest_difference_names_the_place():
    ours = {"w": torch.zeros(3, 4)}
    theirs = {"w": torch.zeros(3, 4)}
    theirs["w"][2, 1] = 0.5
    worst = largest_difference(ours, theirs)
    assert worst["parameter"] == "w" and worst["index"] == (2, 1) and worst["difference"] == 0.5
