"""replens: understand vision encoders and fix their failures."""

__version__ = "0.1.0"
