"""The model and its arithmetic: the MLP, the loss and Keras' RMSprop."""
