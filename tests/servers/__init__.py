"""Real servers for the integration tests: oidc-provider, a protected MCP server, browser drivers.

The pytest fixtures live in `tests.servers.fixtures`; see docs/testing-servers.md.
"""
