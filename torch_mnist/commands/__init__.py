"""The command-line programs: one module per ``scripts/*.py``, each with a ``main(argv)``."""
