from torch_mnist.reference import REFERENCE_EPOCHS, REFERENCE_EVALUATE, comparison_table, reference_history


class TestReference:
    def test_logged_run_as_history(self):
        history = reference_history()
        assert len(history["loss"]) == 20
        assert history["val_accuracy"][19] == 0.9837 and history["loss"][0] == 0.4194
        assert history["val_loss"][15] is None  # cut off in the log
        assert REFERENCE_EVALUATE["accuracy"] == 0.9829000234603882

    def test_table_puts_ours_beside_reference(self):
        table = comparison_table({"loss": [0.25, 0.1], "accuracy": [0.92, 0.97],
                                  "val_loss": [0.13, 0.09], "val_accuracy": [0.96, 0.97]})
        lines = table.splitlines()
        assert len(lines) == 4
        assert lines[2] == "| 1 | 0.2500 | 0.4194 | 0.9200 | 0.8802 | 0.1300 | 0.1287 | 0.9600 | 0.9612 |"

    def test_epochs_beyond_twenty_have_no_reference(self):
        history = {key: [0.5] * 21 for key in ("loss", "accuracy", "val_loss", "val_accuracy")}
        assert comparison_table(history).splitlines()[-1].endswith("| 0.5000 | - |")
        assert len(REFERENCE_EPOCHS) == 20
