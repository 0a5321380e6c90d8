"""jobhost: custom domains with automatic HTTPS, as one Twisted daemon."""

__version__ = "0.1.0"

__all__ = ["__version__"]
