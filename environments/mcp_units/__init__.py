"""mcp_units: Unit conversion whose tools are an MCP server's. (`server: mcp_units`)."""
