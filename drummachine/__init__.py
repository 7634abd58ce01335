"""drummachine: a generative drum machine for the stage."""

__version__ = "0.1.0"
