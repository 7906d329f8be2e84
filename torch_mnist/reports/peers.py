"""The same program in other frameworks, timed beside ours by the benchmark: Keras 3 on its torch backend
(the ``parity`` extra) and a plain JAX + optax program under ``jax.jit`` (the ``peers`` extra).

Each peer is a function that trains one more epoch (training and validation, data resident, batch 128,
RMSprop with Keras' settings) and returns its seconds; None where the framework is not installed.
"""

import time
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
