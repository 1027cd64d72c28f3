"""ncp-broker: one OAuth 2.1 credential broker per user for MCP servers."""

__all__ = ["__version__"]

__version__ = "0.1.0"
