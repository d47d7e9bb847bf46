"""The official `anthropic` client against ez-api with a child key.

Run by crates/ezapi/tests/openai_python.rs after the openai and google-genai checks,
against the same gateway and mocks: an Anthropic route (passed through), an
OpenAI-compatible route, a Gemini route and a Codex subscription route (all translated).
ANTHROPIC_BASE_URL and
ANTHROPIC_API_KEY are set by the test. Prints one line per check and exits non-zero when
any fails.
"""

import sys
import traceback

import anthropic

client = anthropic.Anthropic(max_retries=0, timeout=20.0)

# (public model, expected text, expected input tokens)
ROUTES = [
    ("claude-haiku", "Hello from Claude.", 21),
    ("gpt-4o-mini", "Hello from the mock upstream.", 9),
    ("gemini-flash", "Hello from Gemini.", 17),
    # Anthropic counts cached input apart: 19 prompt tokens, 4 of them cached.
    ("codex", "Hello from Codex.", 15),
]
MESSAGES = [{"role": "user", "content": "Say hello."}]
WEATHER = {
    "name": "weather",
    "description": "The current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def plain(model, text, input_tokens):
    message = client.messages.create(model=model, max_tokens=64, messages=MESSAGES)
    got = "".join(b.text for b in message.content if b.type == "text")
    expect(got == text, f"{model}: text {got!r}, expected {text!r}")
    expect(message.stop_reason == "end_turn", f"{model}: stop_reason {message.stop_reason!r}")
    expect(message.usage.input_tokens == input_tokens, f"{model}: usage {message.usage}")
    return f"{model}: {got!r}"


def streamed(model, text, _input_tokens):
    with client.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as stream:
        got = "".join(stream.text_stream)
        final = stream.get_final_message()
    expect(got == text, f"{model}: streamed {got!r}, expected {text!r}")
    expect(final.stop_reason == "end_turn", f"{model}: stop_reason {final.stop_reason!r}")
    expect(final.usage.output_tokens > 0, f"{model}: usage {final.usage}")
    return f"{model}: {got!r}"


def tool_round_trip(model, answer):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(model=model, max_tokens=64, messages=question, tools=[WEATHER])
    expect(first.stop_reason == "tool_use", f"{model}: stop_reason {first.stop_reason!r}")
    calls = [b for b in first.content if b.type == "tool_use"]
    expect(len(calls) == 1 and calls[0].name == "weather", f"{model}: calls {calls}")
    expect(calls[0].input == {"city": "Paris"}, f"{model}: input {calls[0].input}")
    history = question + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "18C"}]},
    ]
    final = client.messages.create(model=model, max_tokens=64, messages=history, tools=[WEATHER])
    got = "".join(b.text for b in final.content if b.type == "text")
    expect(got == answer, f"{model}: final {got!r}, expected {answer!r}")
    return f"{model}: {calls[0].id} -> {got!r}"


def count(model, input_tokens):
    counted = client.messages.count_tokens(model=model, system="Be brief.", messages=MESSAGES)
    expect(counted.input_tokens == input_tokens, f"{model}: {counted}, expected {input_tokens}")
    return f"{model}: {counted.input_tokens} tokens"


CHECKS = [(f"plain {m}", plain, (m, t, n)) for m, t, n in ROUTES]
CHECKS += [(f"stream {m}", streamed, (m, t, n)) for m, t, n in ROUTES]
CHECKS += [
    ("tools claude-haiku", tool_round_trip, ("claude-haiku", "It is 18C in Paris.")),
    ("tools gemini-flash", tool_round_trip, ("gemini-flash", "It is 18C.")),
    ("tools gpt-4o-mini", tool_round_trip, ("gpt-4o-mini", "Result: 18C")),
    ("tools codex", tool_round_trip, ("codex", "Result: 18C")),
    # Counting: Anthropic as is, Gemini translated (OpenAI cannot count).
    ("count claude-haiku", count, ("claude-haiku", 21)),
    ("count gemini-flash", count, ("gemini-flash", 17)),
]


def main():
    print(f"anthropic {anthropic.__version__} against {client.base_url}")
    failed = 0
    for name, check, args in CHECKS:
        try:
            print(f"ok   {name}: {check(*args)}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc()
    print(f"{len(CHECKS) - failed} of {len(CHECKS)} checks ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
