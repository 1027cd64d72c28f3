"""``ncp-broker proxy SERVER``: a stdio MCP server that forwards to a remote one, with the broker's tokens.

Hosts that can only start stdio servers (Claude Desktop, Cursor, VS Code, Codex, Gemini CLI, Goose, Zed,
NCP…) run it as the server's command; it speaks Streamable HTTP (or the older HTTP+SSE) to the real server
and takes every request's token from the daemon, so every host shares one grant and one refresh chain.
docs/proxy.md describes its behaviour; DESIGN.md rule 12 what it never does.

This package alone in ``ncp_client`` imports httpx and trio; ``ncp-token`` never loads it.
"""

from ncp_client.proxy._run import DEFAULT_LOGIN_TIMEOUT, DEFAULT_MAX_MESSAGE, ProxyOptions, run

__all__ = ["DEFAULT_LOGIN_TIMEOUT", "DEFAULT_MAX_MESSAGE", "ProxyOptions", "run"]
