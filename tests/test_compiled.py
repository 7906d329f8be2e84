import warnings

import pytest
import torch

from torch_mnist import TrainConfig
from torch_mnist.errors import Note
from torch_mnist.recipe import build
from torch_mnist.training import compiled
from torch_mnist.training.compiled import CompiledStep
from torch_mnist.training.epoch import training_step

CPU = torch.device("cpu")


def _batches(sizes=(128, 96), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(size, 784, generator=generator), torch.randint(0, 10, (size,), generator=generator))
            for size in sizes]


def _twins(config=TrainConfig()):
    """Two identical runs' objects: one for the step under test, one for the eager step."""
    return build(config, CPU), build(config, CPU)


def assert_within_rounding_of_a_step(ours, eager, lr=1e-3) -> None:
    """The weights within a tenth of a learning rate of the eager step's, most of them to the bit.

    RMSprop's first steps move a weight by about lr / sqrt(1 - rho) ~ 3 lr whatever the gradient's
    size, so a gradient that cancels to ~0 turns its last-bit rounding (another summation order
    in the products) into a visible fraction of lr; elsewhere the two agree to the bit.
    """
    params, eager_params = list(ours.parameters()), list(eager.parameters())
    for p, q in zip(params, eager_params):
        assert (p - q).abs().max() <= 0.1 * lr
    identical = sum(int((p == q).sum()) for p, q in zip(params, eager_params))
    assert identical >= 0.5 * sum(p.numel() for p in params)


def _ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """The largest distance between ``a`` and ``b`` in units in the last place of float32."""
    as_int = [t.contiguous().view(torch.int32).long() for t in (a, b)]
    ordered = [torch.where(i < 0, -(i & 0x7FFFFFFF), i) for i in as_int]  # sign-magnitude to a line
    return int((ordered[0] - ordered[1]).abs().max())


def assert_one_compiled_step_is_the_eager_step_within_rounding() -> None:
    """One step from the same weights: the fused element-wise code and its reductions (bias gradients,
    log-softmax) may round differently, and so may the products where they go to oneDNN (AMD CPUs)."""
    ours, eager = _twins()
    step = CompiledStep(ours.model, ours.optimizer, ours.loss_fn)
    images, labels = _batches((128,))[0]
    loss, correct = step(images, labels)
    eager_loss, eager_correct = training_step(eager.model, eager.optimizer, eager.loss_fn, images, labels)
    assert step.implementation == "compiled" and torch.equal(correct, eager_correct)
    assert _ulps(loss, eager_loss) <= 8
    assert_within_rounding_of_a_step(ours.model, eager.model)


class TestCompiledStep:
    """Here (not marked compile) the step's function runs uncompiled, op by op (conftest); its formula is
    what these tests hold. The compiled graph's own rounding is held by the tests marked compile below."""

    @pytest.mark.parametrize("semantics", ["keras2", "keras3"])
    def test_one_step_is_the_eager_step(self, semantics):
        ours, eager = _twins(TrainConfig(keras_semantics=semantics))
        step = CompiledStep(ours.model, ours.optimizer, ours.loss_fn)
        for images, labels in _batches():
            loss, correct = step(images, labels)
            eager_loss, eager_correct = training_step(eager.model, eager.optimizer, eager.loss_fn, images, labels)
            assert torch.equal(correct, eager_correct)
            assert _ulps(loss, eager_loss) <= 4
        start = build(TrainConfig(), CPU).model
        assert all(not torch.equal(p, p0) for p, p0 in zip(ours.model.parameters(), start.parameters()))  # moved
        assert_within_rounding_of_a_step(ours.model, eager.model)
        for p, q in zip(ours.model.parameters(), eager.model.parameters()):
            torch.testing.assert_close(ours.optimizer.square_avg(p), eager.optimizer.square_avg(q),
                                       rtol=1e-4, atol=1e-12)
        assert step.implementation == "compiled"

    def test_state_loaded_into_the_optimizer_is_the_state_it_updates(self):
        first, second = _twins()
        CompiledStep(first.model, first.optimizer, first.loss_fn)(*_batches((128,))[0])
        second.model.load_state_dict(first.model.state_dict())
        second.optimizer.load_state_dict(first.optimizer.state_dict())  # new tensors, as a resume makes
        step = CompiledStep(second.model, second.optimizer, second.loss_fn)
        images, labels = _batches((128,), seed=1)[0]
        before = second.optimizer.square_avg(second.model.fc1.weight).clone()
        step(images, labels)
        assert not torch.equal(second.optimizer.square_avg(second.model.fc1.weight), before)

    def test_a_changed_learning_rate_is_used_at_the_next_step(self):
        ours, eager = _twins()
        step = CompiledStep(ours.model, ours.optimizer, ours.loss_fn)
        for lr, (images, labels) in zip((1e-3, 5e-3), _batches((128, 128))):
            ours.optimizer.param_groups[0]["lr"] = eager.optimizer.param_groups[0]["lr"] = lr
            step(images, labels)
            training_step(eager.model, eager.optimizer, eager.loss_fn, images, labels)
        assert_within_rounding_of_a_step(ours.model, eager.model, lr=5e-3)

    def test_a_step_that_cannot_compile_says_so_once_and_trains_eagerly(self, monkeypatch):
        def cannot_compile():
            def run(*args):
                raise RuntimeError("BackendCompilerFailed: no C++ compiler\nlong log")
            return run
        monkeypatch.setattr(compiled, "_new_compiled_step", cannot_compile)
        ours, eager = _twins()
        step = CompiledStep(ours.model, ours.optimizer, ours.loss_fn)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for images, labels in _batches((128, 128, 96)):
                step(images, labels)
                training_step(eager.model, eager.optimizer, eager.loss_fn, images, labels)
        assert [str(w.message) for w in caught if issubclass(w.category, Note)] == [
            "the training step cannot be compiled here (BackendCompilerFailed: no C++ compiler); training "
            "eagerly, which is slower"]
        assert step.implementation == "eager"
        for p, q in zip(ours.model.parameters(), eager.model.parameters()):
            assert torch.equal(p, q)  # nothing was updated by the failed attempt

    def test_an_error_after_the_step_compiled_is_not_taken_for_a_compiler_failure(self, monkeypatch):
        calls = []

        def fails_on_second_call():
            def run(*args):
                calls.append(1)
                if len(calls) > 1:
                    raise RuntimeError("out of memory")
                return compiled._step(*args)
            return run
        monkeypatch.setattr(compiled, "_new_compiled_step", fails_on_second_call)
        recipe = build(TrainConfig(), CPU)
        step = CompiledStep(recipe.model, recipe.optimizer, recipe.loss_fn)
        images, labels = _batches((128,))[0]
        step(images, labels)
        with pytest.raises(RuntimeError, match="out of memory"):
            step(images, labels)

    def test_it_refuses_an_optimizer_it_cannot_drive(self):
        recipe = build(TrainConfig(), CPU)
        with pytest.raises(ValueError, match="torch_mnist's RMSprop"):
            CompiledStep(recipe.model, torch.optim.SGD(recipe.model.parameters(), lr=0.1), recipe.loss_fn)
        other = build(TrainConfig(), CPU)
        with pytest.raises(ValueError, match="exactly the model's trainable parameters"):
            CompiledStep(recipe.model, other.optimizer, recipe.loss_fn)


@pytest.mark.compile
class TestCompiledGraph:
    def test_the_graph_rounds_within_a_few_units_in_the_last_place_of_the_eager_step(self):
        assert_one_compiled_step_is_the_eager_step_within_rounding()

    def test_what_the_graph_was_built_for_is_checked_even_where_other_guards_are_skipped(self):
        # After its first calls a step skips all but the guards that tell its graphs apart; a change of
        # anything its signature holds (eps placement, train/eval, the batch shape) still builds a new graph.
        ours, eager = _twins()
        step = CompiledStep(ours.model, ours.optimizer, ours.loss_fn)
        batches = _batches((128, 128, 128, 64))
        for index, (images, labels) in enumerate(batches):
            if index == 2:
                for recipe in (ours, eager):
                    recipe.optimizer.param_groups[0]["eps_placement"] = "inside"
            step(images, labels)
            training_step(eager.model, eager.optimizer, eager.loss_fn, images, labels)
            assert_within_rounding_of_a_step(ours.model, eager.model)
        assert step.implementation == "compiled"

    def test_each_run_compiles_into_a_cache_of_its_own(self):
        # torch.compile bounds the graphs one function may hold (recompile_limit, 8 by default); a
        # process that trains many runs would meet it if their steps shared one. With the bound at 1,
        # runs of two shapes and a run of each again all still compile.
        images, labels = _batches((128,))[0]
        with torch._dynamo.config.patch(recompile_limit=1), warnings.catch_warnings():
            warnings.simplefilter("error", Note)
            for hidden in ((32,), (16, 8), (32,), (16, 8)):
                recipe = build(TrainConfig(hidden=hidden), CPU)
                step = CompiledStep(recipe.model, recipe.optimizer, recipe.loss_fn)
                step(images, labels)
                assert step.implementation == "compiled"
