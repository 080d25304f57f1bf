"""Unit tests of the transcript's parts: tokenizer/template loading, token deltas, segments, parsers."""

from __future__ import annotations

import pytest

from gym_ray.agents.base import load_tokenizer, tokenizer_fingerprint
from gym_ray.agents.parsers import get_parser, parse_hermes
from gym_ray.agents.tokenizer import ChatTokenizer, TemplateError, as_chat_tokenizer, resolve_chat_template
from gym_ray.agents.transcript import Transcript, TranscriptError
from gym_ray.types import Message, ToolCall, ToolSpec


@pytest.fixture(scope="module")
def chat(default_model_path) -> ChatTokenizer:
    return load_tokenizer(default_model_path)


@pytest.fixture(scope="module")
def tool_chat(default_model_path) -> ChatTokenizer:
    return load_tokenizer(default_model_path, "chatml_tools")


def test_load_tokenizer_is_cached_and_fingerprints_template(default_model_path, chat, tool_chat):
    assert load_tokenizer(default_model_path) is chat
    assert chat.fingerprint != tool_chat.fingerprint  # same vocabulary, different template
    assert len(chat.fingerprint) == 16
    assert tokenizer_fingerprint(chat) == chat.fingerprint
    # A bare HF tokenizer is wrapped once with its own template: same fingerprint as load_tokenizer(path).
    assert as_chat_tokenizer(chat.hf) is as_chat_tokenizer(chat.hf)
    assert tokenizer_fingerprint(chat.hf) == chat.fingerprint


def test_chat_tokenizer_pickles(tool_chat):
    import pickle

    copy = pickle.loads(pickle.dumps(tool_chat))
    assert copy.fingerprint == tool_chat.fingerprint and copy.chat_template == tool_chat.chat_template
    msgs = [Message(role="user", content="hi")]
    assert copy.prompt_ids(msgs) == tool_chat.prompt_ids(msgs)


def test_resolve_chat_template_options(tmp_path):
    assert resolve_chat_template(None, "{{ x }}") == "{{ x }}"
    assert "<tool_call>" in resolve_chat_template("chatml_tools", None)
    assert "<tool_call>" in resolve_chat_template("auto", "{% for m in messages %}{% endfor %}")
    own = "{% if tools %}{{ tools }}{% endif %}"
    assert resolve_chat_template("auto", own) == own
    f = tmp_path / "t.jinja"
    f.write_text("{{ messages }}")
    assert resolve_chat_template(str(f), None) == "{{ messages }}"
    with pytest.raises(TemplateError, match="chat_template 'nope'.*chatml_tools"):
        resolve_chat_template("nope", None)
    with pytest.raises(TemplateError, match="no chat template"):
        resolve_chat_template(None, None)


def test_prompt_includes_tools_only_with_tool_template(chat, tool_chat):
    tools = [ToolSpec(name="get_weather", description="Weather").to_openai()]
    msgs = [Message(role="user", content="hi")]
    assert "get_weather" not in chat.hf.decode(chat.prompt_ids(msgs, tools))
    text = tool_chat.hf.decode(tool_chat.prompt_ids(msgs, tools))
    assert "<tools>" in text and "get_weather" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_prompt_cache_returns_independent_copies(tool_chat):
    msgs = [Message(role="user", content="cache me")]
    a = tool_chat.prompt_ids(msgs)
    a.append(-1)
    b = tool_chat.prompt_ids(msgs)
    assert b[-1] != -1 and b == tool_chat.encode(tool_chat.render([{"role": "user", "content": "cache me"}]))


def test_delta_after_eos_is_glue_plus_new_turn(chat, tool_chat):
    eos = chat.eos_token_id
    tool = [Message(role="tool", content="21 C", tool_call_id="c1")]
    assert chat.hf.decode(chat.delta_ids(tool, eos)) == "\n<|im_start|>tool\n21 C<|im_end|>\n<|im_start|>assistant\n"
    # Without the engine's <|im_end|> (a stop string), the template's whole closing is inserted.
    assert chat.hf.decode(chat.delta_ids(tool, 42)).startswith("<|im_end|>\n<|im_start|>tool\n")
    assert tool_chat.hf.decode(tool_chat.delta_ids(tool, eos)) == (
        "\n<|im_start|>user\n<tool_response>\n21 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def test_delta_matches_full_rerender_for_template_shaped_turns(tool_chat):
    """When the model writes exactly what the template would render, prompt + turns == the full rendering."""
    tools = [ToolSpec(name="get_weather").to_openai()]
    call = ToolCall(id="c0", name="get_weather", arguments={"city": "Paris"})
    history = [Message(role="user", content="Weather?")]
    tr = Transcript(tool_chat, tool_chat.prompt_ids(history, tools))
    gen_text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    gen = tool_chat.encode(gen_text) + [tool_chat.eos_token_id]
    tr.add_generation(gen, [-0.5] * len(gen), "stop")
    results = [Message(role="tool", content="sunny", tool_call_id="c0", name="get_weather")]
    tr.add_context(tr.delta_for(results))
    messages = [*history, Message(role="assistant", content="", tool_calls=[call]), *results]
    assert tr.context() == tool_chat.prompt_ids(messages, tools, cache=False)


def test_transcript_spans_masks_and_logprobs(chat):
    tr = Transcript(chat, [1, 2, 3])
    tr.add_generation([10, 11, 2], [-0.1, -0.2, -0.3], "stop")
    tr.add_context([198, 1])
    tr.add_generation([12], [-0.4], "length")
    seg = tr.current
    assert seg.response_token_ids == [10, 11, 2, 198, 1, 12]
    assert seg.response_loss_mask == [1, 1, 1, 0, 0, 1]
    assert seg.response_logprobs == [-0.1, -0.2, -0.3, 0.0, 0.0, -0.4]
    assert (seg.gen_span_starts, seg.gen_span_ends) == ([0, 5], [3, 6])
    assert seg.call_finish_reasons == ["stop", "length"]
    assert tr.context() == [1, 2, 3, 10, 11, 2, 198, 1, 12]
    with pytest.raises(TranscriptError, match="2 logprobs for 1 token ids"):
        tr.add_generation([5], [-1.0, -2.0], "stop")


def test_set_prompt_extends_or_starts_a_segment(chat):
    tr = Transcript(chat, [1, 2])
    tr.add_generation([7, 8], [-1.0, -1.0], "stop")
    assert tr.set_prompt([1, 2, 7, 8, 9, 9]) is False  # extension: the extra ids are mask-0 context
    assert tr.current.response_loss_mask == [1, 1, 0, 0]
    tr.add_generation([5], [-0.5], "stop")
    assert tr.set_prompt([1, 2, 7, 99]) is True  # rewritten history: new segment, old one untouched
    assert len(tr.segments) == 2 and tr.prefix_breaks == [2]
    assert tr.segments[0].response_token_ids == [7, 8, 9, 9, 5]
    assert tr.current.prompt_token_ids == [1, 2, 7, 99] and tr.current.response_token_ids == []


def test_non_append_only_template_is_refused(chat):
    # Renders the number of messages first: appending anything changes earlier text.
    template = "{{ messages | length }}{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
    odd = ChatTokenizer(chat.hf, template)
    with pytest.raises(TemplateError, match="not append-only.*'tool'"):
        odd.delta_ids([Message(role="tool", content="x")], None)
    with pytest.raises(TemplateError, match="does not render the assistant message content"):
        ChatTokenizer(chat.hf, "{% for m in messages %}{{ m.role }}{% endfor %}")


def test_hermes_parser_calls_content_and_errors():
    text = (
        'Checking both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>{"name": "lookup", "arguments": "{\\"q\\": \\"x\\"}"}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"'
    )
    p = parse_hermes(text, turn=2)
    assert [(c.id, c.name, c.arguments) for c in p.calls] == [
        ("call_2_0", "get_weather", {"city": "Paris"}), ("call_2_1", "lookup", {"q": "x"}),
    ]
    assert p.content == "Checking both."
    assert len(p.errors) == 1 and p.errors[0].startswith("tool call 3 could not be parsed (invalid JSON")


def test_hermes_parser_unclosed_last_call_and_bad_shapes():
    p = parse_hermes('<tool_call>{"name": "f", "arguments": {"a": 1}}')
    assert [c.name for c in p.calls] == ["f"] and not p.errors
    for body, why in [("[1]", "expected a JSON object"), ('{"arguments": {}}', 'missing "name"'),
                      ('{"name": "f", "arguments": [1]}', '"arguments" must be a JSON object'),
                      ('{"name": "f", "arguments": "{oops"}', '"arguments" is a string but not JSON')]:
        p = parse_hermes(f"<tool_call>{body}</tool_call>")
        assert not p.calls and why in p.errors[0], (body, p.errors)
    assert parse_hermes("Just an answer.  ").content == "Just an answer."
    assert not parse_hermes("no <tool_call here").calls


def test_unknown_parser_names_the_option():
    assert get_parser("none")("<tool_call>{}</tool_call>", 0).calls == []
    with pytest.raises(ValueError, match="tool_parser 'xml'.*hermes"):
        get_parser("xml")
