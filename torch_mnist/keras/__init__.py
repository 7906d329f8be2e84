"""Keras files read without Keras, conversion both ways, and the reference in real Keras 3 for parity."""
