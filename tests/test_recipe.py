import pytest
import torch

from torch_mnist import MLP, TrainConfig, build
from torch_mnist.recipe import AUTOCAST_DTYPES
from torch_mnist.recipe import weight_shapes

CPU = torch.device("cpu")


class TestRecipe:
    def test_reference_config_builds_the_reference_objects(self):
        recipe = build(TrainConfig(), CPU)
        assert isinstance(recipe.model, MLP) and recipe.model.hidden == (512,)
        group = recipe.optimizer.param_groups[0]
        assert (group["lr"], group["rho"], group["eps"], group["eps_placement"]) == (1e-3, 0.9, 1e-7, "outside")
        assert recipe.normalization.name == "scale" and recipe.autocast_dtype is None

    def test_each_option_reaches_its_object(self):
        config = TrainConfig(hidden=(32, 16), dropout=0.2, lr=0.01, keras_semantics="keras3",
                             normalize="standardize", dataset="fashion-mnist", amp="bf16")
        recipe = build(config, CPU)
        assert recipe.model.hidden == (32, 16) and recipe.model.dropout == 0.2
        assert recipe.optimizer.param_groups[0]["eps_placement"] == "inside"
        assert recipe.optimizer.param_groups[0]["lr"] == 0.01
        assert recipe.normalization.mean == 0.2860  # Fashion-MNIST's own statistics
        assert recipe.autocast_dtype == AUTOCAST_DTYPES["bf16"]
        saturated = torch.tensor([[100.0, 0.0]])  # keras3 clips: a confident right answer costs 1e-7
        assert recipe.loss_fn(saturated, torch.tensor([0])).item() > 0
        assert build(TrainConfig(), CPU).loss_fn(saturated, torch.tensor([0])).item() == 0

    def test_the_seed_decides_the_weights(self):
        first, again, other = (build(TrainConfig(seed=s), CPU).model for s in (0, 0, 1))
        assert torch.equal(first.fc1.weight, again.fc1.weight)
        assert not torch.equal(first.fc1.weight, other.fc1.weight)

    def test_weight_shapes_are_those_of_the_built_model(self):
        config = TrainConfig(hidden=(64, 32))
        built = {name: tuple(tensor.shape) for name, tensor in build(config, CPU).model.state_dict().items()}
        assert weight_shapes(config) == built


def test_a_model_too_large_for_the_machine_is_refused_before_allocating(monkeypatch):
    import torch_mnist.recipe as recipe
    from torch_mnist import UserError

    allocated = []
    monkeypatch.setattr(recipe, "MLP", lambda *args, **kwargs: allocated.append(args))
    config = TrainConfig(hidden=(65536,) * 64)
    with pytest.raises(UserError, match=r"--hidden \(64 layers, the widest 65536\): 270,639,169,546 parameters"):
        recipe.new_model(config)
    monkeypatch.setattr(recipe, "available_memory", lambda: 10 * 2 ** 20)  # a 10 MiB machine
    with pytest.raises(UserError, match="more than this machine's available 0.0 GiB"):
        recipe.new_model(TrainConfig(hidden=(1024, 1024)))
    assert allocated == []
