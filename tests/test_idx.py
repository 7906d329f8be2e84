import shutil

import numpy as np
import pytest

from torch_mnist import UserError, load_mnist
from torch_mnist.data.idx import check_split, verify_checksums

from conftest import write_idx_images, write_idx_labels


@pytest.fixture
def raw(synthetic_root):
    return synthetic_root / "MNIST" / "raw"


class TestIdxChecks:
    def test_synthetic_split_passes(self, raw):
        assert check_split(raw, "train") == 600 and check_split(raw, "test") == 200

    def test_truncated_images_file(self, raw):
        path = raw / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-100])
        with pytest.raises(UserError, match="train-images-idx3-ubyte: .* truncated or corrupted"):
            check_split(raw, "train")

    def test_file_shorter_than_header(self, raw):
        (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00")
        with pytest.raises(UserError, match="t10k-labels-idx1-ubyte: truncated idx file"):
            check_split(raw, "test")

    def test_wrong_magic_number(self, raw):
        shutil.copy(raw / "train-labels-idx1-ubyte", raw / "train-images-idx3-ubyte")
        with pytest.raises(UserError, match="magic number 0x00000801, expected 0x00000803"):
            check_split(raw, "train")

    def test_wrong_image_size(self, raw):
        write_idx_images(raw / "t10k-images-idx3-ubyte", np.zeros((200, 32, 32)))
        with pytest.raises(UserError, match="images are 32x32, expected 28x28"):
            check_split(raw, "test")

    def test_counts_must_agree(self, raw):
        write_idx_labels(raw / "t10k-labels-idx1-ubyte", np.zeros(199))
        with pytest.raises(UserError, match="holds 200 images but t10k-labels-idx1-ubyte holds 199 labels"):
            check_split(raw, "test")

    def test_label_out_of_range(self, raw):
        labels = np.zeros(200)
        labels[17] = 12
        write_idx_labels(raw / "t10k-labels-idx1-ubyte", labels)
        with pytest.raises(UserError, match="label 12 at index 17 is outside 0-9"):
            check_split(raw, "test")

    def test_load_mnist_refuses_a_corrupted_file(self, raw, synthetic_root):
        path = raw / "train-labels-idx1-ubyte"
        path.write_bytes(path.read_bytes() + b"extra")
        with pytest.raises(UserError, match="train-labels-idx1-ubyte"):
            load_mnist(synthetic_root, train=True)

    def test_checksums_reject_other_files(self, raw):
        with pytest.raises(UserError, match="differs from the official release"):
            verify_checksums(raw)

    def test_checksums_of_the_real_files(self, real_root):
        verify_checksums(real_root / "MNIST" / "raw")


def test_an_unreadable_file_is_named(raw, monkeypatch):
    import builtins
    locked = raw / "t10k-labels-idx1-ubyte"
    real_open = builtins.open

    def open_refusing_one(path, *args, **kwargs):  # as chmod 000 does to anyone but root
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_refusing_one)
    with pytest.raises(UserError, match=f"^{locked}: cannot be read \\(Permission denied\\)$"):
        check_split(raw, "test")
