"""modelplane: train and serve large models on one shared pool of heterogeneous accelerators."""

__version__ = "0.1.0"
