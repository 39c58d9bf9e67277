"""The package version (one place: the build reads it, and composed configs' headers name it)."""

__version__ = "0.1.0"
