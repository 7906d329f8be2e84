"""docs/walkthrough.ipynb, the reference program as notebook cells: executed top to bottom in a fresh kernel
(the interpreter running the suite, so the project's venv), on the real MNIST files."""

import pytest

from conftest import REPO

nbformat = pytest.importorskip("nbformat", reason="the notebook extra installs nbformat, nbclient and ipykernel")
nbclient = pytest.importorskip("nbclient", reason="the notebook extra installs nbformat, nbclient and ipykernel")

NOTEBOOK = REPO / "docs" / "walkthrough.ipynb"


def _text(cell) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", []) if output.output_type == "stream")


@pytest.mark.notebook
def test_the_walkthrough_runs_every_cell(real_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_MNIST_DATA", str(real_root))
    monkeypatch.setenv("WALKTHROUGH_EPOCHS", "1")  # every cell's code path; the stored outputs have 3 epochs
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:  # run afresh: nothing of the stored outputs may pass for this run's
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # In an empty folder: the notebook finds its data through $TORCH_MNIST_DATA and writes nothing of its own.
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, at the first that fails
    texts = [_text(cell) for cell in notebook.cells if cell.cell_type == "code"]
    everything = "\n".join(texts)
    assert "x_train (60000, 28, 28) torch.uint8" in everything and "Total params: 407,050" in everything
    assert "Epoch 1/1" in everything and "469/469 [==============================]" in everything
    accuracy = float(everything.split("Test accuracy:")[1].split()[0])
    assert accuracy > 0.95  # one epoch of the reference recipe reads ~96% of the test set
    assert "my_seven.png: 7 (" in everything  # the drawn digit is read
    assert list(tmp_path.iterdir()) == []


def test_the_stored_notebook_is_small_and_was_run():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert NOTEBOOK.stat().st_size < 300_000  # readable on a code host: no megabytes of images
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code)  # outputs of one real run
    assert not any(output.output_type == "error" for cell in code for output in cell.outputs)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
