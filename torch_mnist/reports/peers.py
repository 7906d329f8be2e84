"""The same program in other frameworks, timed beside ours by the benchmark: Keras 3 on its torch backend
(the ``parity`` extra), Keras 3 on its JAX backend (``parity`` and ``peers``) and a plain JAX + optax program
under ``jax.jit`` (the ``peers`` extra).

Each peer is a function that trains one more epoch (training and validation, data resident, batch 128,
RMSprop with Keras' settings) and returns its seconds; None where the framework is not installed.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..data.batches import TensorSplit

EpochTimer = Callable[[], float]


def keras_peer(train_set: TensorSplit, test_set: TensorSplit) -> Optional[EpochTimer]:
    """The reference program as written, in Keras 3 on its torch backend."""
    from ..errors import UserError
    from ..keras.parity import import_keras, keras_epoch_timer

    try:
        import_keras()
    except UserError:
        return None
    return keras_epoch_timer(train_set.images.cpu().numpy(), train_set.labels, test_set.images.cpu().numpy(),
                             test_set.labels)


class KerasOnJax:
    """The reference program in Keras 3 on its JAX backend, in a process of its own (Keras takes one backend
    per process, and this one runs on torch): each call asks it for one more epoch and returns its seconds."""

    READY_TIMEOUT_S = 300  # importing Keras and JAX and building the model: seconds, not minutes

    def __init__(self, train_set: TensorSplit, test_set: TensorSplit):
        self._folder = tempfile.TemporaryDirectory(prefix="torch_mnist-keras-jax-")
        data = Path(self._folder.name) / "mnist.npz"
        np.savez(data, images=train_set.images.cpu().numpy(), labels=train_set.labels.cpu().numpy(),
                 test_images=test_set.images.cpu().numpy(), test_labels=test_set.labels.cpu().numpy())
        self._process = subprocess.Popen([sys.executable, "-m", __name__, str(data)], text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         env={**os.environ, "KERAS_BACKEND": "jax"})

    def ready(self) -> bool:
        """Whether the process started and built the model (it prints ``ready``); closes it when not."""
        if self._process.stdout.readline().strip() == "ready":
            return True
        self.close()
        return False

    def __call__(self) -> float:
        self._process.stdin.write("epoch\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError("the Keras-on-JAX process ended early")
        return float(answer)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()  # its loop ends at the end of its input
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._folder.cleanup()


def keras_jax_peer(train_set: TensorSplit, test_set: TensorSplit) -> Optional[KerasOnJax]:
    """The reference program as written, in Keras 3 on its JAX backend; None without Keras or JAX."""
    if not all(importlib.util.find_spec(name) for name in ("keras", "jax")):
        return None
    peer = KerasOnJax(train_set, test_set)
    return peer if peer.ready() else None


def _serve_keras_epochs(data: Path) -> None:
    """The Keras-on-JAX process: load the arrays, build the reference, then one epoch per line read."""
    from ..keras.parity import keras_epoch_timer
    import torch

    arrays = np.load(data)
    one_epoch = keras_epoch_timer(arrays["images"], torch.from_numpy(arrays["labels"]), arrays["test_images"],
                                  torch.from_numpy(arrays["test_labels"]), backend="jax")
    print("ready", flush=True)
    for _ in sys.stdin:
        print(one_epoch(), flush=True)


def jax_peer(train_set: TensorSplit, test_set: TensorSplit, batch_size: int = 128,
             seed: int = 0) -> Optional[EpochTimer]:
    """The same MLP in JAX + optax: one jitted step (forward, backward, RMSprop update, loss and correct
    count) and one jitted evaluation, the images on the device, each batch gathered inside the step."""
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError:
        return None
    images, labels = jnp.asarray(train_set.images.cpu().numpy().reshape(len(train_set.labels), -1)), \
        jnp.asarray(train_set.labels.cpu().numpy().astype(np.int32))
    test_images = jnp.asarray(test_set.images.cpu().numpy().reshape(len(test_set.labels), -1))
    test_labels = jnp.asarray(test_set.labels.cpu().numpy().astype(np.int32))
    key, first, second = jax.random.split(jax.random.PRNGKey(seed), 3)

    def glorot(key, inputs: int, outputs: int):  # Keras' Dense initialization
        limit = (6.0 / (inputs + outputs)) ** 0.5
        return jax.random.uniform(key, (inputs, outputs), jnp.float32, -limit, limit)

    params = {"w1": glorot(first, images.shape[1], 512), "b1": jnp.zeros(512),
              "w2": glorot(second, 512, 10), "b2": jnp.zeros(10)}
    optimizer = optax.rmsprop(1e-3, decay=0.9, eps=1e-7)
    state = {"params": params, "optimizer": optimizer.init(params), "key": key}

    def loss_and_correct(params, x, y):
        logits = jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
        return loss, jnp.sum(jnp.argmax(logits, axis=1) == y)

    @jax.jit
    def step(params, optimizer_state, index):
        x, y = images[index], labels[index]
        (loss, correct), grads = jax.value_and_grad(lambda p: loss_and_correct(p, x, y), has_aux=True)(params)
        grads = jax.tree_util.tree_map(lambda g: g / x.shape[0], grads)  # the gradient of the batch's mean
        updates, optimizer_state = optimizer.update(grads, optimizer_state, params)
        return optax.apply_updates(params, updates), optimizer_state, loss, correct

    @jax.jit
    def evaluate(params, x, y):
        return loss_and_correct(params, x, y)

    def one_epoch() -> float:
        start = time.perf_counter()
        state["key"], shuffle = jax.random.split(state["key"])
        order = jax.random.permutation(shuffle, len(labels))
        params, optimizer_state = state["params"], state["optimizer"]
        for begin in range(0, len(labels), batch_size):
            params, optimizer_state, loss, correct = step(params, optimizer_state, order[begin:begin + batch_size])
        figures = [evaluate(params, test_images[begin:begin + batch_size], test_labels[begin:begin + batch_size])
                   for begin in range(0, len(test_labels), batch_size)]
        jax.block_until_ready((params, figures))
        state["params"], state["optimizer"] = params, optimizer_state
        return time.perf_counter() - start

    return one_epoch


if __name__ == "__main__":
    _serve_keras_epochs(Path(sys.argv[1]))
