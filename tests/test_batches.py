import torch

from torch_mnist import InMemoryBatches
from torch_mnist.data.batches import PermutationBatchSampler


class TestBatching:
    def _split(self, n=300):
        from torch_mnist import TensorSplit
        return TensorSplit(torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 784),
                           torch.arange(n) % 10)

    def test_shuffled_epoch_covers_every_sample_once_with_ragged_last_batch(self):
        batches = InMemoryBatches(self._split(), 128, torch.Generator().manual_seed(0))
        sizes, seen = [], []
        for images, labels in batches:
            sizes.append(len(labels))
            seen += images[:, 0].long().tolist()
        assert sizes == [128, 128, 44] and len(batches) == 3
        assert sorted(seen) == list(range(300)) and seen != list(range(300))

    def test_each_epoch_reshuffles_and_seed_repeats(self):
        first = [images[:, 0].tolist() for images, _ in InMemoryBatches(self._split(), 100,
                                                                     torch.Generator().manual_seed(5))]
        batches = InMemoryBatches(self._split(), 100, torch.Generator().manual_seed(5))
        epoch1 = [images[:, 0].tolist() for images, _ in batches]
        epoch2 = [images[:, 0].tolist() for images, _ in batches]
        assert epoch1 == first and epoch2 != epoch1

    def test_without_generator_batches_are_in_order(self):
        seen = [i for images, _ in InMemoryBatches(self._split(), 128) for i in images[:, 0].long().tolist()]
        assert seen == list(range(300))

    def test_dataloader_sampler_draws_the_same_batches(self):
        memory = InMemoryBatches(self._split(), 128, torch.Generator().manual_seed(9))
        sampler = PermutationBatchSampler(300, 128, torch.Generator().manual_seed(9))
        for _ in range(2):
            expected = [images[:, 0].long().tolist() for images, _ in memory]
            assert list(sampler) == expected
