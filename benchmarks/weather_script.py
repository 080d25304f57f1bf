"""The instant scripted policy of `orchestration.py`: call get_weather for the asked city, then answer
with what the tool returned (so every rollout scores 1 when the pipeline is right)."""

import re

_CITY = re.compile(r"weather like in ([^?]+)\?")
_RESULT = re.compile(r"The weather in ([^<]+?) is (\w+), (-?\d+) °C\.")


def reply(prompt_text: str, turn: int):
    if turn == 0:
        cities = _CITY.findall(prompt_text)
        return {"name": "get_weather", "arguments": {"city": cities[-1] if cities else "Paris"}}
    found = _RESULT.findall(prompt_text)
    if not found:
        return "I could not get the weather."
    city, condition, temp = found[-1]
    return f"It is {condition}, {temp} °C in {city}."
