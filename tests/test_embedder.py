"""Batch normalisation folded into the convolutions: the same vectors, no normalisation layer left."""

import numpy as np
import pytest

from recommender.config import Settings
from recommender.embedder import Embedder, fold_batch_norm


def resnet_with_trained_like_statistics(keras):
    """ResNet50 whose normalisations have the non-trivial statistics of trained weights (random initialisation
    leaves them at gamma 1, beta 0, mean 0, variance 1, which would make any folding look right)."""
    keras.utils.set_random_seed(3)
    model = keras.applications.ResNet50(weights=None, include_top=False, pooling="max", input_shape=(64, 64, 3))
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.1, shape), rng.normal(0, 0.1, shape),
                               rng.uniform(0.5, 2.0, shape)])
    return model


def test_folded_resnet_gives_the_same_features_without_any_normalisation_layer():
    import keras

    model = resnet_with_trained_like_statistics(keras)
    pixels = keras.applications.resnet50.preprocess_input(
        np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32"))
    expected = model(pixels, training=False).numpy()
    names = [layer.name for layer in model.layers[1:]]
    folded = fold_batch_norm(keras, model)  # folds model's convolutions in place
    got = folded(pixels, training=False).numpy()
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    assert [layer.name for layer in folded.layers[1:]] == names


@pytest.mark.fast
def test_a_model_named_otherwise_is_left_as_it_is():
    import keras

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.BatchNormalization(name="norm")(keras.layers.Conv2D(4, 3, name="c")(inputs))
    model = keras.Model(inputs, outputs)
    assert fold_batch_norm(keras, model) is model


def test_the_embedder_runs_the_folded_model():
    import keras

    embedder = Embedder(Settings(weights="random", image_size=64))
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in embedder.model.layers)
    vector = embedder.embed(np.full((1, 64, 64, 3), 128, np.uint8))[0]
    assert vector.shape == (2048,) and abs(np.linalg.norm(vector) - 1) < 1e-5
