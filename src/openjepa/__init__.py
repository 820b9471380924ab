"""openjepa: joint-embedding predictive pretraining (I-JEPA, TC-JEPA, V-JEPA, SALT) for vision encoders."""

__version__ = "0.1.0"
