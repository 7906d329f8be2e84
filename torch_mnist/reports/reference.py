"""The reference Keras run's logged figures, as data, and a side-by-side table.

Source: the log of the reference program, a Keras MNIST MLP course project
(docs/faithfulness.md). Epoch 16's validation figures are cut off in that
log and are ``None`` here.
"""

from typing import Dict, List, Optional

from ..history import HISTORY_KEYS, format_figure

# epoch: (loss, accuracy, val_loss, val_accuracy)
REFERENCE_EPOCHS: Dict[int, tuple] = {
    1: (0.4194, 0.8802, 0.1287, 0.9612),
    2: (0.1069, 0.9693, 0.0919, 0.9724),
    3: (0.0681, 0.9787, 0.0749, 0.9767),
    4: (0.0473, 0.9865, 0.0644, 0.9810),
    5: (0.0336, 0.9897, 0.0705, 0.9797),
    6: (0.0290, 0.9922, 0.0684, 0.9799),
    7: (0.0213, 0.9940, 0.0701, 0.9810),
    8: (0.0147, 0.9960, 0.0652, 0.9828),
    9: (0.0117, 0.9971, 0.0644, 0.9829),
    10: (0.0089, 0.9977, 0.0725, 0.9805),
    11: (0.0071, 0.9982, 0.0732, 0.9826),
    12: (0.0061, 0.9984, 0.0691, 0.9826),
    13: (0.0036, 0.9991, 0.0726, 0.9819),
    14: (0.0034, 0.9990, 0.0716, 0.9845),
    15: (0.0025, 0.9993, 0.0799, 0.9821),
    16: (0.0022, 0.9994, None, None),
    17: (0.0016, 0.9995, 0.0894, 0.9821),
    18: (0.0011, 0.9997, 0.0889, 0.9824),
    19: (0.00075595, 0.9998, 0.0958, 0.9813),
    20: (0.00072355, 0.9998, 0.0883, 0.9837),
}
# The program's final model.evaluate() on the test set (from a different run than the table).
REFERENCE_EVALUATE = {"loss": 0.09333343058824539, "accuracy": 0.9829000234603882}


def reference_history() -> Dict[str, List[Optional[float]]]:
    """The logged run in the shape of a Keras ``History.history``."""
    epochs = sorted(REFERENCE_EPOCHS)
    return {key: [REFERENCE_EPOCHS[e][i] for e in epochs] for i, key in enumerate(HISTORY_KEYS)}


def comparison_table(history: Dict[str, list]) -> str:
    """A per-epoch markdown table: this run's four figures beside the reference's."""
    header = ("| epoch | loss | ref | accuracy | ref | val_loss | ref | val_accuracy | ref |\n"
              "|---|---|---|---|---|---|---|---|---|")
    rows = [header]
    for i in range(len(history["loss"])):
        reference = REFERENCE_EPOCHS.get(i + 1, (None,) * 4)
        cells = [f"{format_figure(history[key][i])} | {format_figure(ref)}"
                 for key, ref in zip(HISTORY_KEYS, reference)]
        rows.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
