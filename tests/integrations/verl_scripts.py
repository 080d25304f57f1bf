"""Scripted replies for the VeRL tests (`model.script` functions): `good` solves weather and stands at
blackjack, `bad` answers weather without the tool and hits."""

import re


def good(prompt_text: str, turn: int):
    if "get_weather" in prompt_text:
        seen = re.findall(r"The weather in (.+?) is (\w+), (-?\d+) °C", prompt_text)
        if seen:
            city, condition, temp = seen[-1]
            return f"It is {condition} and {temp} °C in {city}."
        city = re.findall(r"\bin ([A-Z][a-z]+)", prompt_text)[-1]
        return {"name": "get_weather", "arguments": {"city": city}}
    return "I will stand. <action>stand</action>"


def bad(prompt_text: str, turn: int):
    if "get_weather" in prompt_text:
        return "It is probably nice."
    return "Another card! <action>hit</action>"
