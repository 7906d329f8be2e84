from torch_mnist.history import HISTORY_KEYS, format_figure, new_history, record_epoch


def test_record_epoch_appends_in_keras_shape():
    history = new_history()
    figures = record_epoch(history, {"loss": 0.3, "accuracy": 0.9},
                           {"loss": 0.2, "accuracy": 0.95, "predicted": None})
    assert list(history) == list(HISTORY_KEYS)
    assert history == {"loss": [0.3], "accuracy": [0.9], "val_loss": [0.2], "val_accuracy": [0.95]}
    assert figures == {"loss": 0.3, "accuracy": 0.9, "val_loss": 0.2, "val_accuracy": 0.95}


def test_figures_read_like_keras_logs():
    assert format_figure(0.98765) == "0.9877"
    assert format_figure(0.00072355) == "0.000724"
    assert format_figure(None) == "-"
