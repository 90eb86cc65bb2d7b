"""nbexec's version (its own module: importing it imports nothing else of nbexec)."""

__version__ = "0.1.0"
