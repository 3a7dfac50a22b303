"""scaling: plasticity-aware weight-decay scaling laws for language-model pretraining."""

__version__ = "0.1.0"
