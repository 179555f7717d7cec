"""The doors users open: the command line, kb serve's HTTP API and page, the MCP tools."""
