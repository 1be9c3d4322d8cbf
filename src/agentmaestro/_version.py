"""The package version, importable from any layer (the package root re-exports everything else, lazily)."""

__version__ = "0.1.0"
