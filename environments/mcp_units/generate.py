"""Write data/example.jsonl: unit conversions to make with the MCP server's `convert` tool."""

import json
from pathlib import Path

CASES = [(3.5, "inch", "cm"), (12, "mile", "km"), (250, "g", "oz"), (5, "gallon", "l"), (180, "cm", "ft"),
         (70, "kg", "lb"), (2.25, "km", "m"), (16, "oz", "g")]
SYSTEM = ("You are a helpful assistant. Use the convert tool, then answer in one sentence that states the "
          "converted value.")


def main() -> None:
    rows = [{"task_id": f"mcp_units-{i}", "env": "mcp_units",
             "prompt": [{"role": "system", "content": SYSTEM},
                        {"role": "user", "content": f"Convert {v:g} {a} to {b}."}],
             "verifier_metadata": {"value": v, "from_unit": a, "to_unit": b}}
            for i, (v, a, b) in enumerate(CASES)]
    out = Path(__file__).parent / "data" / "example.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} tasks -> {out}")


if __name__ == "__main__":
    main()
