import math

import torch

from torch_mnist import cross_entropy


class TestCrossEntropy:
    def test_equals_softmax_then_categorical_crossentropy(self):
        logits = torch.randn(16, 10)
        labels = torch.randint(0, 10, (16,))
        one_hot = torch.nn.functional.one_hot(labels, 10).float()
        keras_style = -(one_hot * logits.softmax(dim=1).log()).sum(dim=1).mean()
        torch.testing.assert_close(cross_entropy(logits, labels), keras_style)

    def test_sum_reduction(self):
        logits, labels = torch.randn(7, 10), torch.randint(0, 10, (7,))
        torch.testing.assert_close(cross_entropy(logits, labels, reduction="sum"),
                                   7 * cross_entropy(logits, labels))

    def test_clipping_bounds_confident_mistakes(self):
        logits = torch.tensor([[100.0, 0.0, 0.0]])
        labels = torch.tensor([1])
        assert cross_entropy(logits, labels).item() > 99
        assert abs(cross_entropy(logits, labels, clip_probabilities=True).item() + math.log(1e-7)) < 1e-3

    def test_clipping_changes_nothing_for_moderate_logits(self):
        logits, labels = torch.randn(32, 10), torch.randint(0, 10, (32,))
        torch.testing.assert_close(cross_entropy(logits, labels, clip_probabilities=True),
                                   cross_entropy(logits, labels), rtol=1e-5, atol=1e-6)
