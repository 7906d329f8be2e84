"""Parity with real Keras 3 (torch backend): the same arithmetic, checked so that no CPU can break it.

Keras 3 computes its matmuls in float32 whatever floatx says (its type promotion
turns 64-bit results into 32-bit ones), so the two sides' float32 matmuls may round
differently on different BLAS kernels. The checks are therefore built so that such
a difference cannot compound: the optimizer and the loss are compared on identical
inputs, and the whole model step by step from shared state.
"""

import importlib.util
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
# CI installs the extra: there a missing Keras is an error, not a skip. Looked up, not imported: importing
# Keras costs seconds, paid by the tests that use it rather than by every collection of the suite.
if not os.environ.get("CI") and importlib.util.find_spec("keras") is None:
    pytest.skip("the parity extra is not installed: pip install -e '.[parity]'", allow_module_level=True)

from torch_mnist import MLP, InMemoryBatches, Normalization, RMSprop, decode, evaluate, load_mnist# noqa: E402
from torch_mnist.training.epoch import train_one_epoch  # noqa: E402
from torch_mnist.keras.parity import (import_keras, keras_parameters, keras_reference_model,  # noqa: E402
                                      largest_difference, one_hot)
from torch_mnist.model.losses import cross_entropy  # noqa: E402

pytestmark = pytest.mark.keras
CPU = torch.device("cpu")
STEPS = 100
LR, EPS = 1e-3, 1e-7
F32 = torch.finfo(torch.float32).eps  # 2**-23


@pytest.fixture(scope="module")
def mnist(real_root):
    scale = Normalization.named("scale")
    return decode(load_mnist(real_root, True), scale, CPU), decode(load_mnist(real_root, False), scale, CPU)


def _keras3_pair(seed=0, lr=LR):
    model = MLP(generator=torch.Generator().manual_seed(seed))
    optimizer = RMSprop(model.parameters(), lr=lr, eps_placement="inside")
    return model, optimizer, keras_reference_model(model, lr=lr)


def test_rmsprop_update_equals_keras_on_identical_gradients():
    # Gradients of every kind a run meets: large, tiny, and exactly zero (never-inked pixels).
    keras = import_keras()
    generator = torch.Generator().manual_seed(0)
    shape = (64, 784)
    ours = torch.zeros(shape)
    theirs = keras.Variable(np.zeros(shape, dtype=np.float32))
    optimizer = RMSprop([ours], eps_placement="inside")
    reference = keras.optimizers.RMSprop(learning_rate=LR, rho=0.9, epsilon=EPS)
    reference.build([theirs])
    for _ in range(STEPS):
        scale = torch.logspace(-9, 0, shape[1]).expand(shape)  # per-column magnitudes from 1e-9 to 1
        gradient = torch.randn(shape, generator=generator) * scale
        gradient[:, :20] = 0.0
        ours.grad = gradient.clone()
        optimizer.step()
        reference.apply_gradients([(gradient.clone(), theirs)])
    # Each side rounds its few elementwise operations differently (fused or not); every step
    # moves a weight by at most lr * |g| / sqrt(0.1 g**2) ~ 3.2e-3, so 100 steps of a few
    # float32 roundings each stay well inside 100 * 3.2e-3 * 8 * 2**-23 ~ 3e-7.
    torch.testing.assert_close(ours, theirs.value, rtol=0, atol=STEPS * 3.2e-3 * 8 * F32)
    assert ours[:, :20].abs().max() == 0  # a zero gradient never moves its weight


def test_clipped_cross_entropy_equals_keras_in_float64():
    keras = import_keras()
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(256, 10, dtype=torch.float64, generator=generator) * 4
    logits[:32, 3] += 40.0  # saturated: probabilities clipped at both ends, as late in training
    labels = torch.randint(0, 10, (256,), generator=generator)
    labels[:16] = 3  # confidently right (p > 1 - 1e-7) ...
    labels[16:32] = 4  # ... and confidently wrong (p < 1e-7)
    ours = logits.clone().requires_grad_()
    theirs = logits.clone().requires_grad_()
    loss = cross_entropy(ours, labels, clip_probabilities=True)
    target = torch.nn.functional.one_hot(labels, 10).double()
    reference = keras.losses.categorical_crossentropy(target, keras.activations.softmax(theirs)).mean()
    loss.backward()
    reference.backward()
    # Elementwise operations only, no matmul: float64 rounding, nothing to compound.
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-9, atol=1e-15)
    assert (ours.grad[:16] == 0).all()  # the clipped samples get no gradient on either side


def test_every_step_from_shared_state_agrees_with_keras(mnist):
    train_set, _ = mnist
    model, optimizer, reference = _keras3_pair()
    parameters = dict(model.named_parameters())
    batches = iter(InMemoryBatches(train_set, 128, torch.Generator().manual_seed(0)))
    worst, at_the_clip, kinks = {"difference": 0.0}, [], []
    for step in range(STEPS):
        # Keras starts every step from our weights and our squared-gradient averages ...
        for dense, linear in zip(reference.layers, model.layers):
            dense.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])
        for velocity, p in zip(getattr(reference.optimizer, "_velocities", []),  # built at Keras' first step
                                (model.fc1.weight, model.fc1.bias, model.fc2.weight, model.fc2.bias)):
            square_avg = optimizer.state[p].get("square_avg", torch.zeros_like(p))
            velocity.assign(square_avg.T if p.dim() == 2 else square_avg)
        images, labels = next(batches)
        if _a_label_probability_at_the_clip(model, images, labels):
            at_the_clip.append(step + 1)
        with torch.no_grad():  # hidden units a sample's rounding may switch on or off (ReLU's kink)
            at_the_kink = (model.fc1(images).abs() < KINK).any(dim=0)
        kinks.append(int(at_the_kink.sum()))
        optimizer.zero_grad()
        cross_entropy(model(images), labels, clip_probabilities=True).backward()
        optimizer.step()
        reference.train_on_batch(images.numpy(), one_hot(labels))
        # ... so one step's rounding is all that can differ; it cannot compound.
        ours, theirs = _outside_the_kinks(parameters, keras_parameters(reference), at_the_kink)
        difference = largest_difference(ours, theirs)
        if step + 1 not in at_the_clip and difference["difference"] > worst["difference"]:
            worst = {**difference, "step": step + 1}
    # One step: the gradient of a mean over 128 samples carries float32 rounding of ~1e-6 of its
    # terms' size (products of activations and errors, below 1), and RMSprop divides it by at least
    # sqrt(eps) ~ 3.2e-4 before multiplying by lr = 1e-3: at most ~3.2 * 1e-6 ~ 3e-6 per weight.
    assert worst["difference"] <= 3e-6, f"largest one-step difference: {worst}"
    # Keras 3 clips probabilities to 1 - 1e-7, two float32 steps below 1: a sample that confident is one
    # rounding away from getting no gradient at all, so a step holding one may differ by that sample's whole
    # contribution, on any CPU. Such steps are rare this early in training.
    assert len(at_the_clip) <= STEPS // 10, f"steps with a probability at the clip: {at_the_clip}"
    # Likewise a hidden unit whose pre-activation for some sample is within rounding of 0: one side's
    # ReLU may pass that sample's gradient and the other's not, so that unit's incoming weights may
    # differ by the sample's contribution. They are left out of the step's comparison; they are few.
    assert sum(kinks) <= 0.01 * STEPS * model.fc1.out_features, f"units at the kink per step: {kinks}"


KINK = 1e-5  # |pre-activation| below this: float32 rounding of a 784-term sum (~1e-6) may flip its sign


def _outside_the_kinks(ours: dict, theirs: dict, at_the_kink: torch.Tensor):
    """Both sides' parameters with the incoming weights and bias of the units at the kink set equal (zero)."""
    ours = {name: p.detach().clone() for name, p in ours.items()}
    theirs = {name: torch.as_tensor(p).clone() for name, p in theirs.items()}
    for name in ("fc1.weight", "fc1.bias"):
        ours[name][at_the_kink] = 0
        theirs[name][at_the_kink] = 0
    return ours, theirs


def _a_label_probability_at_the_clip(model, images, labels) -> bool:
    """Whether a sample's probability of its label is within two float32 steps of Keras 3's clip bounds."""
    with torch.no_grad():
        probabilities = model(images).softmax(dim=1).gather(1, labels.unsqueeze(1))
    upper, lower = torch.tensor(1 - 1e-7), torch.tensor(1e-7)
    near_upper = probabilities >= upper - 2 * torch.finfo(torch.float32).eps / 2  # float32 steps below 1: 2**-24
    near_lower = (probabilities - lower).abs() <= 2 * lower * torch.finfo(torch.float32).eps
    return bool((near_upper | near_lower).any())


def test_epoch_bookkeeping_equals_keras_history(mnist):
    # lr 1e-12: the weights stay put, so what is compared is how each side turns per-batch
    # losses and counts into epoch figures (a ragged last batch included), not training.
    train_set, test_set = mnist
    model, optimizer, reference = _keras3_pair(seed=1, lr=1e-12)
    subset = type(train_set)(train_set.images[:3000], train_set.labels[:3000])  # 23 full batches + 56
    history = reference.fit(subset.images.numpy(), one_hot(subset.labels), batch_size=128, epochs=1,
                            shuffle=False, verbose=0,
                            validation_data=(test_set.images.numpy(), one_hot(test_set.labels))).history
    loss_fn = lambda logits, labels, **kw: cross_entropy(logits, labels, clip_probabilities=True, **kw)  # noqa: E731
    ours = train_one_epoch(model, InMemoryBatches(subset, 128), optimizer, CPU, loss_fn=loss_fn)
    val = evaluate(model, InMemoryBatches(test_set, 128), CPU, loss_fn=loss_fn)
    # Float32 forward passes on both sides: the losses agree to float32 rounding; an accuracy may
    # differ by one image whose two largest logits tie to within that rounding.
    assert ours["loss"] == pytest.approx(history["loss"][0], rel=1e-5)
    assert ours["accuracy"] == pytest.approx(history["accuracy"][0], abs=1 / 3000 + 1e-7)
    assert val["loss"] == pytest.approx(history["val_loss"][0], rel=1e-5)
    assert val["accuracy"] == pytest.approx(history["val_accuracy"][0], abs=1 / 10000 + 1e-7)


def test_largest_difference_names_the_place():
    ours = {"w": torch.zeros(3, 4)}
    theirs = {"w": torch.zeros(3, 4)}
    theirs["w"][2, 1] = 0.5
    worst = largest_difference(ours, theirs)
    assert worst["parameter"] == "w" and worst["index"] == (2, 1) and worst["difference"] == 0.5
