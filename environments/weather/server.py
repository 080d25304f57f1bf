"""Weather: one tool, and the final answer must use what the tool returned."""

import re
import zlib

from gym_ray import ResourceServer, VerifyResult, final_answer, tool, tool_results

CONDITIONS = ("sunny", "cloudy", "rainy", "snowy", "windy", "foggy")


def forecast(city: str) -> tuple[str, int]:
    """A fixed forecast per city, so the right answer is known without the tool."""
    h = zlib.crc32(city.strip().lower().encode())
    return CONDITIONS[h % len(CONDITIONS)], h % 40 - 5


class Weather(ResourceServer):
    verifier = "called the tool + condition and temperature in the answer"
    origin = "NeMo Gym's `example_single_tool_call`"
    metric = "accuracy"

    @tool
    def get_weather(self, city: str) -> str:
        """Get the current weather in a city.

        Args:
            city: The city name, e.g. "Paris".
        """
        condition, temp = forecast(city)
        return f"The weather in {city} is {condition}, {temp} °C."

    def verify(self, task, messages):
        condition, temp = forecast(task.verifier_metadata["city"])
        answer = final_answer(messages)
        if answer is None:
            return VerifyResult(reward=0.0, info={"reason": "no final answer"})
        called = any(f"{condition}, {temp} °C" in r for r in tool_results(messages, "get_weather"))
        components = {
            "called_tool": float(called),
            "condition": float(condition in answer.lower()),
            "temperature": float(re.search(rf"(?<![\d.-]){temp}(?!\d)", answer) is not None),
        }
        return VerifyResult(reward=min(components.values()), components=components)
