
import pytest
import torch

from torch_mnist import Normalization, UserError, decode, load_mnist
from torch_mnist.data.registry import resolve_data_root


class TestDataRoot:
    def test_flag_then_environment_then_default(self, monkeypatch):
        monkeypatch.setenv("TORCH_MNIST_DATA", "/from/env")
        assert str(resolve_data_root("/from/flag")) == "/from/flag"
        assert str(resolve_data_root(None)) == "/from/env"
        monkeypatch.delenv("TORCH_MNIST_DATA")
        assert str(resolve_data_root(None)) == "data"


class TestMissingData:
    def test_offline_error_names_folder_and_files_and_leaves_nothing(self, tmp_path):
        root = tmp_path / "nothing-here"
        with pytest.raises(UserError) as error:
            load_mnist(root, train=True)  # the download fails: this machine has no internet
        message = str(error.value)
        assert str(root / "MNIST" / "raw") in message
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            assert name in message
        assert "\n" not in message
        assert not root.exists()

    def test_no_download_when_disallowed(self, tmp_path):
        with pytest.raises(UserError, match="not found"):
            load_mnist(tmp_path, train=False, download=False)


class TestNormalization:
    @pytest.mark.parametrize("name", ["scale", "standardize"])
    def test_whole_tensor_equals_per_image_transform(self, name, synthetic_root):
        normalization = Normalization.named(name)
        per_image = load_mnist(synthetic_root, train=True, transform=normalization.per_image_transform())
        decoded = decode(load_mnist(synthetic_root, train=True), normalization, torch.device("cpu"))
        for i in range(len(per_image)):
            image, label = per_image[i]
            assert torch.equal(decoded.images[i], image.flatten())
            assert decoded.labels[i].item() == label

    @pytest.mark.parametrize("name", ["scale", "standardize"])
    def test_whole_tensor_equals_per_image_transform_on_real_mnist(self, name, real_root):
        normalization = Normalization.named(name)
        per_image = load_mnist(real_root, train=False, transform=normalization.per_image_transform())
        decoded = decode(load_mnist(real_root, train=False), normalization, torch.device("cpu"))
        stacked = torch.stack([per_image[i][0].flatten() for i in range(0, 10000, 7)])
        assert torch.equal(decoded.images[::7], stacked)

    def test_scale_output_range_and_shape(self, real_root):
        test_set = decode(load_mnist(real_root, train=False), Normalization.named("scale"), torch.device("cpu"))
        assert test_set.images.shape == (10000, 784) and test_set.images.dtype == torch.float32
        assert test_set.images.min().item() == 0.0 and test_set.images.max().item() == 1.0
        assert test_set.labels.shape == (10000,) and set(test_set.labels.tolist()) == set(range(10))

    def test_standardize_centres_the_training_pixels(self, real_root):
        train_set = decode(load_mnist(real_root, train=True), Normalization.named("standardize"),
                           torch.device("cpu"))
        assert abs(train_set.images.mean().item()) < 1e-3
        assert abs(train_set.images.std().item() - 1.0) < 1e-3

    def test_unknown_name_is_a_user_error(self):
        with pytest.raises(UserError, match="unknown normalization"):
            Normalization.named("whiten")


class TestDatasets:
    def test_each_dataset_has_its_own_names_and_folder(self):
        from torch_mnist.data.mnist import torchvision_class
        from torch_mnist.data.registry import DATASETS, dataset_info
        for info in DATASETS.values():
            if info.folder != "MNIST":  # MNIST's are digits here, "0 - zero" in torchvision
                assert list(info.class_names) == torchvision_class(info).classes
        assert dataset_info("fashion-mnist").class_names[9] == "Ankle boot"
        assert dataset_info("kmnist").folder == "KMNIST"
        assert Normalization.named("standardize", "fashion-mnist") != Normalization.named("standardize", "mnist")
        with pytest.raises(UserError, match="unknown dataset"):
            dataset_info("cifar")

    def test_mnist_statistics_are_those_of_its_training_pixels(self, real_root):
        pixels = load_mnist(real_root, train=True).data.double() / 255
        standardize = Normalization.named("standardize", "mnist")
        assert (round(pixels.mean().item(), 4), round(pixels.std().item(), 4)) == (standardize.mean, standardize.std)

    def test_missing_fashion_files_name_their_folder(self, tmp_path):
        with pytest.raises(UserError, match=f"FashionMNIST files not found in {tmp_path / 'FashionMNIST' / 'raw'}"):
            load_mnist(tmp_path, train=True, download=False, dataset="fashion-mnist")
