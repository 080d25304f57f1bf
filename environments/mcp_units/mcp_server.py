"""The MCP server of `mcp_units` (the `mcp` SDK's MCPServer, stdio or Streamable HTTP): unit conversion.

`python -m gym_ray_env_mcp_units.mcp_server` serves stdio; `--http PORT` serves Streamable HTTP
on 127.0.0.1. `session_log` shows this process's conversions, so a server started per episode keeps
episodes apart and a shared one does not.
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

# units -> (dimension, factor to the base unit)
UNITS = {
    "mm": ("length", 0.001), "cm": ("length", 0.01), "m": ("length", 1.0), "km": ("length", 1000.0),
    "inch": ("length", 0.0254), "ft": ("length", 0.3048), "mile": ("length", 1609.344),
    "g": ("mass", 0.001), "kg": ("mass", 1.0), "lb": ("mass", 0.45359237), "oz": ("mass", 0.028349523125),
    "ml": ("volume", 0.001), "l": ("volume", 1.0), "gallon": ("volume", 3.785411784),
}


def convert_value(value: float, from_unit: str, to_unit: str) -> float:
    (dim_a, fa), (dim_b, fb) = UNITS[from_unit], UNITS[to_unit]
    if dim_a != dim_b:
        raise ToolError(f"cannot convert {dim_a} ({from_unit}) to {dim_b} ({to_unit})")
    return round(value * fa / fb, 4)


app = MCPServer("units", log_level="WARNING")
_log: list[str] = []


@app.tool()
def convert(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a quantity between units of length, mass or volume.

    Args:
        value: The quantity to convert, e.g. 3.5.
        from_unit: Its unit: mm, cm, m, km, inch, ft, mile, g, kg, lb, oz, ml, l or gallon.
        to_unit: The unit to convert to (same list, same dimension).
    """
    for unit in (from_unit, to_unit):
        if unit not in UNITS:
            raise ToolError(f"unknown unit {unit!r}; known: {', '.join(UNITS)}")
    line = f"{value:g} {from_unit} = {convert_value(value, from_unit, to_unit):g} {to_unit}"
    _log.append(line)
    return line


@app.tool()
def session_log() -> str:
    """List the conversions made so far on this server."""
    return "\n".join(_log) or "no conversions yet"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run()
