"""A verifiers (0.4) environment package, written in verifiers' own API (`verifiers.v1`): what the
Environments Hub publishes and `prime env install` installs. gym_ray runs it by name
(`server: verifiers:gym-ray-vf-units`); nothing in it knows about gym_ray.

Unit conversion with a tool: the taskset yields the tasks, `UnitsToolset.convert` is the tool (an MCP
tool in verifiers), and the task's `@vf.reward` functions are the rubric: `correct` (weight 0.8, the
answer states the converted value) and `used_tool` (weight 0.2, the tool returned it), so a right answer
reached with the tool scores 1.0. The toolset keeps the episode's conversions in its `State`.
"""

import re
from collections.abc import Iterator

import verifiers.v1 as vf

FACTORS = {("inch", "cm"): 2.54, ("mile", "km"): 1.609344, ("kg", "lb"): 2.2046226218,
           ("l", "gallon"): 0.2641720524, ("ft", "m"): 0.3048, ("oz", "g"): 28.349523125}
VALUES = (1.5, 3, 7.25, 12, 40, 100)
SYSTEM_PROMPT = "Use the convert tool, then answer in one sentence that states the converted value."
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def convert_value(value: float, from_unit: str, to_unit: str) -> float:
    if (from_unit, to_unit) in FACTORS:
        return round(value * FACTORS[from_unit, to_unit], 4)
    if (to_unit, from_unit) in FACTORS:
        return round(value / FACTORS[to_unit, from_unit], 4)
    raise ValueError(f"cannot convert {from_unit} to {to_unit}")


class UnitsState(vf.State):
    conversions: list[str] = []


class UnitsToolset(vf.Toolset[vf.ToolsetConfig, UnitsState]):
    TOOL_PREFIX = None  # the tool is offered as `convert`, not `units_toolset_convert`

    @vf.tool
    def convert(self, value: float, from_unit: str, to_unit: str) -> str:
        """Convert a quantity from one unit to another (inch, cm, mile, km, kg, lb, l, gallon, ft, m, oz, g)."""
        result = convert_value(value, from_unit, to_unit)
        line = f"{value:g} {from_unit} = {result:g} {to_unit}"
        self.state.conversions.append(line)
        return line


class UnitsData(vf.TaskData):
    value: float
    from_unit: str
    to_unit: str


class UnitsTask(vf.Task[UnitsData, UnitsState, vf.TaskConfig]):
    @classmethod
    def toolsets(cls, config: vf.TaskConfig) -> list[vf.Toolset]:
        return [UnitsToolset(vf.ToolsetConfig())]

    def expected(self) -> float:
        return convert_value(self.data.value, self.data.from_unit, self.data.to_unit)

    @vf.reward(weight=0.8)
    async def correct(self, trace: vf.Trace) -> float:
        expected = self.expected()
        return float(any(abs(float(n) - expected) <= 1e-3 * max(1.0, abs(expected))
                         for n in _NUMBER.findall(trace.last_reply)))

    @vf.reward(weight=0.2)
    async def used_tool(self, trace: vf.Trace) -> float:
        return float(any(line.endswith(f"= {self.expected():g} {self.data.to_unit}")
                         for line in trace.state.conversions))

    @vf.metric
    async def tool_calls(self, trace: vf.Trace) -> float:
        return float(len(trace.tool_messages))


class UnitsTaskset(vf.Taskset[UnitsTask, vf.TasksetConfig]):
    def load(self) -> Iterator[UnitsTask]:
        for i, ((a, b), value) in enumerate((pair, v) for pair in FACTORS for v in VALUES):
            frm, to = (a, b) if i % 2 == 0 else (b, a)
            yield UnitsTask(UnitsData(id=f"units-{i}", prompt=f"Convert {value:g} {frm} to {to}.",
                                      system_prompt=SYSTEM_PROMPT, value=value, from_unit=frm, to_unit=to),
                            self.config.task)


__all__ = ["UnitsTaskset", "UnitsTask", "UnitsToolset"]
