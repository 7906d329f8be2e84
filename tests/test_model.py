import math

import torch

from torch_mnist import MLP


class TestMLP:
    def test_parameter_count_matches_keras_summary(self):
        assert sum(p.numel() for p in MLP().parameters()) == 407_050  # 784*512+512 + 512*10+10

    def test_accepts_flat_and_image_shaped_input(self):
        model = MLP()
        images = torch.rand(5, 1, 28, 28)
        assert model(images).shape == (5, 10)
        assert torch.equal(model(images), model(images.view(5, 784)))

    def test_returns_logits_not_probabilities(self):
        logits = MLP()(torch.rand(8, 784))
        assert not torch.allclose(logits.sum(dim=1), torch.ones(8))
        assert (logits < 0).any()

    def test_keras_dense_initialisation(self):
        model = MLP()
        for layer in (model.fc1, model.fc2):
            fan_out, fan_in = layer.weight.shape
            limit = math.sqrt(6 / (fan_in + fan_out))  # Glorot-uniform bound
            assert torch.count_nonzero(layer.bias) == 0
            assert layer.weight.abs().max() <= limit
            # A uniform on [-limit, limit] has std limit / sqrt(3).
            assert abs(layer.weight.std().item() - limit / math.sqrt(3)) < 0.05 * limit

    def test_generator_makes_initialisation_repeatable(self):
        a = MLP(generator=torch.Generator().manual_seed(3))
        b = MLP(generator=torch.Generator().manual_seed(3))
        c = MLP(generator=torch.Generator().manual_seed(4))
        assert torch.equal(a.fc1.weight, b.fc1.weight)
        assert not torch.equal(a.fc1.weight, c.fc1.weight)

    def test_architecture_rebuilds_same_shapes(self):
        model = MLP(hidden=32)
        rebuilt = MLP(**model.architecture())
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
               {k: v.shape for k, v in model.state_dict().items()}


class TestVariants:
    def test_keras_mnist_mlp_parameter_count(self):
        # Keras' mnist_mlp example: Dense(512) Dropout Dense(512) Dropout Dense(10) -> 669,706 parameters.
        model = MLP(hidden=(512, 512), dropout=0.2)
        assert sum(p.numel() for p in model.parameters()) == 669_706
        assert [name for name, _ in model.named_children()] == ["fc1", "fc2", "fc3"]

    def test_dropout_only_while_training(self):
        model = MLP(hidden=(64, 64), dropout=0.5)
        images = torch.rand(8, 784)
        model.eval()
        assert torch.equal(model(images), model(images))
        model.train()
        assert not torch.equal(model(images), model(images))

    def test_rejects_bad_dropout(self):
        import pytest
        with pytest.raises(ValueError):
            MLP(dropout=1.0)
