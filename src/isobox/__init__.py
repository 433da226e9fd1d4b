"""isobox: one container engine, process or VM isolation per container."""

__version__ = "0.1.0"
