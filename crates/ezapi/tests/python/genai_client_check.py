"""The official `google-genai` client against ez-api with a child key.

Run by crates/ezapi/tests/openai_python.rs after the openai checks, against the same
gateway and mocks: a Gemini route (passed through), an OpenAI-compatible route, an
Anthropic route and a Codex subscription route (all translated). GEMINI_BASE_URL and GEMINI_API_KEY are set by the test.
Prints one line per check and exits non-zero when any fails.
"""

import os
import sys
import traceback

from google import genai
from google.genai import types

client = genai.Client(
    api_key=os.environ["GEMINI_API_KEY"],
    http_options=types.HttpOptions(base_url=os.environ["GEMINI_BASE_URL"], timeout=20_000),
)

# (public model, expected text, expected prompt tokens)
ROUTES = [
    ("gemini-flash", "Hello from Gemini.", 17),
    ("gpt-4o-mini", "Hello from the mock upstream.", 9),
    ("claude-haiku", "Hello from Claude.", 21),
    ("codex", "Hello from Codex.", 19),
]
WEATHER = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="weather",
            description="The current weather in a city",
            parameters=types.Schema(
                type="OBJECT", properties={"city": types.Schema(type="STRING")}, required=["city"]
            ),
        )
    ]
)
NO_AUTO = types.AutomaticFunctionCallingConfig(disable=True)


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def plain(model, text, prompt):
    response = client.models.generate_content(model=model, contents="Say hello.")
    expect(response.text == text, f"{model}: text {response.text!r}, expected {text!r}")
    expect(response.usage_metadata.prompt_token_count == prompt, f"{model}: usage {response.usage_metadata}")
    expect(str(response.candidates[0].finish_reason).endswith("STOP"), f"{model}: {response.candidates[0].finish_reason}")
    return f"{model}: {response.text!r}"


def streamed(model, text, prompt):
    chunks = list(client.models.generate_content_stream(model=model, contents="Say hello."))
    got = "".join(c.text or "" for c in chunks)
    expect(got == text, f"{model}: streamed {got!r}, expected {text!r}")
    last = chunks[-1]
    expect(last.usage_metadata and last.usage_metadata.prompt_token_count == prompt, f"{model}: usage {last.usage_metadata}")
    return f"{model}: {len(chunks)} chunks"


def tool_round_trip(model, answer):
    question = types.Content(role="user", parts=[types.Part(text="What is the weather in Paris?")])
    config = types.GenerateContentConfig(tools=[WEATHER], automatic_function_calling=NO_AUTO)
    first = client.models.generate_content(model=model, contents=[question], config=config)
    calls = first.function_calls or []
    expect(len(calls) == 1 and calls[0].name == "weather", f"{model}: calls {calls}")
    expect(calls[0].args == {"city": "Paris"}, f"{model}: args {calls[0].args}")
    result = types.Part.from_function_response(name="weather", response={"content": "18C"})
    history = [question, first.candidates[0].content, types.Content(role="user", parts=[result])]
    final = client.models.generate_content(model=model, contents=history, config=config)
    expect(final.text == answer, f"{model}: final {final.text!r}, expected {answer!r}")
    return f"{model}: call -> {final.text!r}"


def count(model, total):
    counted = client.models.count_tokens(model=model, contents="How many tokens is this?")
    expect(counted.total_tokens == total, f"{model}: total_tokens {counted.total_tokens}, expected {total}")
    return f"{model}: {counted.total_tokens} tokens"


def listed():
    names = sorted(m.name for m in client.models.list())
    want = sorted(f"models/{m}" for m in [r[0] for r in ROUTES] + ["text-embedding-3-small"])
    expect(names == want, f"models {names}, expected {want}")
    one = client.models.get(model="claude-haiku")
    expect(one.name == "models/claude-haiku", f"model {one}")
    return f"{len(names)} models"


CHECKS = [(f"plain {m}", plain, (m, t, p)) for m, t, p in ROUTES]
CHECKS += [(f"stream {m}", streamed, (m, t, p)) for m, t, p in ROUTES]
CHECKS += [
    ("tools gemini-flash", tool_round_trip, ("gemini-flash", "It is 18C.")),
    ("tools claude-haiku", tool_round_trip, ("claude-haiku", "It is 18C in Paris.")),
    ("tools gpt-4o-mini", tool_round_trip, ("gpt-4o-mini", "Result: 18C")),
    ("tools codex", tool_round_trip, ("codex", "Result: 18C")),
    # Counting: Gemini as is, Anthropic translated (OpenAI cannot count).
    ("count gemini-flash", count, ("gemini-flash", 17)),
    ("count claude-haiku", count, ("claude-haiku", 21)),
    ("models", listed, ()),
]


def main():
    print(f"google-genai {genai.__version__} against {os.environ['GEMINI_BASE_URL']}")
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
