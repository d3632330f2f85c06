"""v6mostly: tools for running an IPv6-mostly network."""

__version__ = "0.1.0"
