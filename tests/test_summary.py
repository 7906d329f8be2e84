import pytest

from torch_mnist import MLP, summary
from torch_mnist.model.summary import count_parameters, layer_rows


class TestSummary:
    def test_the_reference_counts_are_keras_own(self):
        # Keras' summary() of Sequential([Dense(512, relu), Dense(10, softmax)]) on 784 inputs
        rows = layer_rows(MLP())
        assert [(r.name, r.kind, r.output_shape, r.parameters) for r in rows] == [
            ("dense", "Dense", (None, 512), 401_920), ("dense_1", "Dense", (None, 10), 5_130)]
        text = summary(MLP())
        assert "Total params: 407,050" in text and "Trainable params: 407,050" in text
        assert "Non-trainable params: 0" in text and " dense_1 (Dense)              (None, 10)" in text

    def test_mnist_mlp_with_its_dropout_layers(self):
        # Keras' mnist_mlp example: Dense(512), Dropout(0.2), Dense(512), Dropout(0.2), Dense(10): 669,706
        rows = layer_rows(MLP(hidden=(512, 512), dropout=0.2))
        assert [(r.name, r.parameters) for r in rows] == [("dense", 401_920), ("dropout", 0), ("dense_1", 262_656),
                                                          ("dropout_1", 0), ("dense_2", 5_130)]
        assert count_parameters(MLP(hidden=(512, 512))) == {"total": 669_706, "trainable": 669_706,
                                                            "non_trainable": 0}

    def test_frozen_parameters_are_non_trainable(self):
        model = MLP(hidden=(16,))
        model.fc1.weight.requires_grad_(False)
        assert count_parameters(model) == {"total": 784 * 16 + 16 + 16 * 10 + 10, "trainable": 16 + 170,
                                           "non_trainable": 784 * 16}
        assert "Non-trainable params: 12,544" in summary(model)

    def test_dropout_after_some_layers_only(self):
        kinds = [r.kind for r in layer_rows(MLP(hidden=(32, 16), dropout=(0.0, 0.3)))]
        assert kinds == ["Dense", "Dense", "Dropout", "Dense"]


@pytest.mark.keras
@pytest.mark.parametrize("hidden, dropout", [((512,), 0.0), ((512, 512), 0.2)])
def test_against_keras_own_summary(hidden, dropout):
    from torch_mnist.keras.parity import import_keras
    keras = import_keras()
    layers = [keras.Input((784,))]
    for units in hidden:
        layers.append(keras.layers.Dense(units, activation="relu"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(10, activation="softmax"))
    model = keras.Sequential(layers)
    theirs = [(type(layer).__name__, layer.count_params()) for layer in model.layers]
    ours = [(row.kind, row.parameters) for row in layer_rows(MLP(hidden=hidden, dropout=dropout))]
    assert ours == theirs and count_parameters(MLP(hidden=hidden))["total"] == model.count_params()
