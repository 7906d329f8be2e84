import os
import re
from pathlib import Path

import pytest

from torch_mnist.reports.reference import REFERENCE_EPOCHS, REFERENCE_EVALUATE, comparison_table, reference_history

from conftest import REPO

# The page the figures were transcribed from: in this project's workspace, beside the checkout and
# beside the data folder $TORCH_MNIST_DATA points at.
PLACES = [REPO.parent / "shared", *([Path(os.environ["TORCH_MNIST_DATA"]).parent] if "TORCH_MNIST_DATA" in os.environ
                                    else [])]
REFERENCE_PAGE = next((p / "reference" / "keras_reference.md" for p in PLACES
                       if (p / "reference" / "keras_reference.md").is_file()), None)


def _logged_table(page: str) -> dict:
    """The per-epoch rows of the page's "The run it logged" table: epoch -> four figures or None."""
    section = page.split("## The run it logged", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].isdigit():
            rows[int(cells[0])] = tuple(None if "cut off" in cell else float(cell) for cell in cells[1:])
    return rows


class TestReference:
    @pytest.mark.skipif(REFERENCE_PAGE is None, reason="shared/reference/keras_reference.md is not beside this "
                                                         "checkout or the data")
    def test_figures_are_the_logged_ones(self):
        page = REFERENCE_PAGE.read_text()
        assert REFERENCE_EPOCHS == _logged_table(page)
        evaluated = re.search(r"`loss: ([0-9.]+)`,\s*`acc: ([0-9.]+)`", page)
        assert REFERENCE_EVALUATE == {"loss": float(evaluated[1]), "accuracy": float(evaluated[2])}

    def test_logged_run_as_history(self):
        history = reference_history()
        assert list(history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
        assert all(len(values) == 20 for values in history.values())
        for epoch, figures in REFERENCE_EPOCHS.items():  # columns transposed in epoch order
            assert tuple(history[key][epoch - 1] for key in history) == figures

    def test_table_puts_ours_beside_reference(self):
        table = comparison_table({"loss": [0.25, 0.1], "accuracy": [0.92, 0.97],
                                  "val_loss": [0.13, 0.09], "val_accuracy": [0.96, 0.97]})
        lines = table.splitlines()
        assert len(lines) == 4
        assert lines[2] == "| 1 | 0.2500 | 0.4194 | 0.9200 | 0.8802 | 0.1300 | 0.1287 | 0.9600 | 0.9612 |"

    def test_epochs_beyond_twenty_have_no_reference(self):
        history = {key: [0.5] * 21 for key in ("loss", "accuracy", "val_loss", "val_accuracy")}
        assert comparison_table(history).splitlines()[-1].endswith("| 0.5000 | - |")
        assert comparison_table(history).splitlines()[-6].endswith("| 0.5000 | - | 0.5000 | - |")  # epoch 16
