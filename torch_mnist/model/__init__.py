"""The model and its arithmetic: the MLP, the loss, Keras' RMSprop and its fused CPU update."""
