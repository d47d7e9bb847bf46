"""The official `openai` client against ez-api with a child key.

Run by crates/ezapi/tests/openai_python.rs, which starts the gateway in front of mock
upstreams of the four families — OpenAI Chat, Anthropic, Gemini and a Codex subscription
(OpenAI Responses) — and sets OPENAI_BASE_URL and OPENAI_API_KEY. Chat Completions and the
Responses API are each checked against every family: plain, streamed and a tool call's
round trip. The expected values mirror the mocks in crates/test-upstreams. Prints one line
per check and exits non-zero when any fails.
"""

import json
import sys
import traceback

import openai

CHAT_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
REPLY_PIECES = ["Hello", " from", " the", " mock", " upstream."]
PROMPT_TOKENS = 9
EMBEDDING = [0.25, -0.5, 1.0]
MESSAGES = [{"role": "user", "content": "Say hello."}]
CLAUDE_MODEL = "claude-haiku"
CLAUDE_UPSTREAM_MODEL = "claude-3-5-haiku-20241022"
CLAUDE_PIECES = ["Hello", " from", " Claude."]
CLAUDE_USAGE = (21, 7)
GEMINI_MODEL = "gemini-flash"
GEMINI_UPSTREAM_MODEL = "gemini-2.5-flash"
GEMINI_REPLY = "Hello from Gemini."
GEMINI_USAGE = (17, 5)
CODEX_MODEL = "codex"
CODEX_UPSTREAM_MODEL = "gpt-5-codex"
CODEX_REPLY = "Hello from Codex."
# 19 prompt tokens (4 of them cached), 6 output tokens.
CODEX_USAGE = (19, 6)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

# No retries: a failure shows the gateway's first answer, not a later one.
client = openai.OpenAI(max_retries=0, timeout=20.0)


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def expect_usage(usage):
    expect(usage is not None, "no usage block")
    want = (PROMPT_TOKENS, len(REPLY_PIECES), PROMPT_TOKENS + len(REPLY_PIECES))
    got = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    expect(got == want, f"usage {got}, expected {want}")


def chat_completion():
    completion = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES)
    expect(completion.object == "chat.completion", f"object {completion.object!r}")
    expect(completion.model == CHAT_MODEL, f"model {completion.model!r}")
    expect(len(completion.choices) == 1, f"{len(completion.choices)} choices")
    choice = completion.choices[0]
    expect(choice.message.role == "assistant", f"role {choice.message.role!r}")
    expect(choice.message.content == "".join(REPLY_PIECES), f"content {choice.message.content!r}")
    expect(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}")
    expect_usage(completion.usage)
    expect(completion._request_id, "no x-request-id header")
    return f"{choice.message.content!r}, {completion.usage.total_tokens} tokens, request {completion._request_id}"


def stream_chunks(**extra):
    stream = client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, stream=True, **extra)
    expect(isinstance(stream, openai.Stream), f"a {type(stream).__name__}, not a Stream")
    chunks = list(stream)
    expect(chunks, "no chunks")
    for chunk in chunks:
        expect(chunk.object == "chat.completion.chunk", f"object {chunk.object!r}")
        expect(chunk.id == chunks[0].id, "chunk ids differ")
    with_choices = [c for c in chunks if c.choices]
    expect(with_choices[0].choices[0].delta.role == "assistant", "the first delta has no assistant role")
    pieces = [c.choices[0].delta.content for c in with_choices if c.choices[0].delta.content]
    expect(pieces == REPLY_PIECES, f"deltas {pieces}, expected {REPLY_PIECES}")
    expect("".join(pieces) == "".join(REPLY_PIECES), "concatenated content differs")
    finishes = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    expect(finishes == ["stop"], f"finish reasons {finishes}")
    expect(with_choices[-1].choices[0].finish_reason == "stop", "the last choice chunk does not finish")
    return chunks, pieces


def chat_stream():
    chunks, pieces = stream_chunks()
    expect(all(c.choices for c in chunks), "a chunk without choices although include_usage was not asked")
    expect(all(c.usage is None for c in chunks), "a usage block although include_usage was not asked")
    return f"{len(chunks)} chunks, deltas {pieces}"


def chat_stream_with_usage():
    chunks, _ = stream_chunks(stream_options={"include_usage": True})
    last = chunks[-1]
    expect(last.choices == [], f"the last chunk has choices {last.choices}")
    expect_usage(last.usage)
    expect(all(c.usage is None for c in chunks[:-1]), "usage on a chunk before the last")
    return f"{len(chunks)} chunks, final usage {last.usage.total_tokens} tokens"


def embeddings_base64():
    # The client asks for base64 unless told otherwise, and decodes it to floats.
    result = client.embeddings.create(model=EMBEDDING_MODEL, input=["first", "second"])
    expect(result.object == "list", f"object {result.object!r}")
    expect(result.model == EMBEDDING_MODEL, f"model {result.model!r}")
    vectors = [d.embedding for d in sorted(result.data, key=lambda d: d.index)]
    expect(vectors == [EMBEDDING + [0.0], EMBEDDING + [1.0]], f"vectors {vectors}")
    expect(result.usage.prompt_tokens == 4 and result.usage.total_tokens == 4, f"usage {result.usage}")
    return f"{len(vectors)} vectors of {len(vectors[0])}"


def embeddings_float():
    result = client.embeddings.create(model=EMBEDDING_MODEL, input="one", encoding_format="float")
    expect(len(result.data) == 1, f"{len(result.data)} embeddings")
    expect(result.data[0].embedding == EMBEDDING + [0.0], f"vector {result.data[0].embedding}")
    return f"vector {result.data[0].embedding}"


def models_list():
    ids = sorted(m.id for m in client.models.list())
    expect(CHAT_MODEL in ids and EMBEDDING_MODEL in ids, f"models {ids}")
    model = next(m for m in client.models.list() if m.id == CHAT_MODEL)
    expect(model.object == "model", f"object {model.object!r}")
    return f"models {ids}"


def wrong_key():
    bad = openai.OpenAI(api_key="sk-ez-" + "0" * 40, max_retries=0, timeout=20.0)
    try:
        bad.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES)
    except openai.AuthenticationError as e:
        expect(e.status_code == 401, f"status {e.status_code}")
        expect(e.code == "key_not_found", f"code {e.code!r}")
        expect(e.type == "authentication_error", f"type {e.type!r}")
        return f"AuthenticationError {e.status_code} {e.code}"
    raise AssertionError("no AuthenticationError")


def unknown_model():
    try:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    except openai.NotFoundError as e:
        expect(e.status_code == 404, f"status {e.status_code}")
        expect(e.code == "model_not_found", f"code {e.code!r}")
        return f"NotFoundError {e.status_code} {e.code}"
    raise AssertionError("no NotFoundError")


def claude_chat():
    completion = client.chat.completions.create(
        model=CLAUDE_MODEL, messages=[{"role": "system", "content": "Be brief."}] + MESSAGES, max_tokens=64
    )
    expect(completion.object == "chat.completion", f"object {completion.object!r}")
    expect(completion.model == CLAUDE_UPSTREAM_MODEL, f"model {completion.model!r}")
    choice = completion.choices[0]
    expect(choice.message.content == "".join(CLAUDE_PIECES), f"content {choice.message.content!r}")
    expect(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}")
    got = (completion.usage.prompt_tokens, completion.usage.completion_tokens)
    expect(got == CLAUDE_USAGE, f"usage {got}, expected {CLAUDE_USAGE}")
    return f"{choice.message.content!r} via Anthropic"


def claude_stream():
    stream = client.chat.completions.create(
        model=CLAUDE_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    with_choices = [c for c in chunks if c.choices]
    expect(with_choices[0].choices[0].delta.role == "assistant", "the first delta has no assistant role")
    pieces = [c.choices[0].delta.content for c in with_choices if c.choices[0].delta.content]
    expect(pieces == CLAUDE_PIECES, f"deltas {pieces}, expected {CLAUDE_PIECES}")
    finishes = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    expect(finishes == ["stop"], f"finish reasons {finishes}")
    last = chunks[-1]
    expect(last.choices == [] and last.usage is not None, "no final usage chunk")
    got = (last.usage.prompt_tokens, last.usage.completion_tokens)
    expect(got == CLAUDE_USAGE, f"usage {got}, expected {CLAUDE_USAGE}")
    return f"{len(chunks)} chunks via Anthropic"


def claude_tool_round_trip():
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=CLAUDE_MODEL, messages=question, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    expect(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}")
    calls = choice.message.tool_calls or []
    expect(len(calls) == 1 and calls[0].function.name == "weather", f"tool calls {calls}")
    args = json.loads(calls[0].function.arguments)
    expect(args == {"city": "Paris"}, f"arguments {args}")
    history = question + [
        {"role": "assistant", "content": choice.message.content, "tool_calls": [c.model_dump() for c in calls]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "18C and sunny"},
    ]
    final = client.chat.completions.create(model=CLAUDE_MODEL, messages=history, tools=[WEATHER_TOOL])
    answer = final.choices[0].message.content
    expect(answer == "It is 18C and sunny in Paris.", f"final answer {answer!r}")
    expect(final.choices[0].finish_reason == "stop", f"finish_reason {final.choices[0].finish_reason!r}")
    return f"call {calls[0].id} -> {answer!r}"


def claude_tool_stream():
    stream = client.chat.completions.create(
        model=CLAUDE_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls = {}
    finishes = []
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
                if call.id:
                    entry["id"] = call.id
                if call.function and call.function.name:
                    entry["name"] = call.function.name
                if call.function and call.function.arguments:
                    entry["arguments"] += call.function.arguments
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    expect(list(calls) == [0], f"tool call indices {list(calls)}")
    expect(calls[0]["name"] == "weather" and calls[0]["id"], f"tool call {calls[0]}")
    expect(json.loads(calls[0]["arguments"]) == {"city": "Paris"}, f"arguments {calls[0]['arguments']!r}")
    expect(finishes == ["tool_calls"], f"finish reasons {finishes}")
    return f"streamed call {calls[0]['id']} {calls[0]['arguments']}"


def gemini_chat():
    completion = client.chat.completions.create(
        model=GEMINI_MODEL, messages=[{"role": "system", "content": "Be brief."}] + MESSAGES
    )
    expect(completion.model == GEMINI_UPSTREAM_MODEL, f"model {completion.model!r}")
    choice = completion.choices[0]
    expect(choice.message.content == GEMINI_REPLY, f"content {choice.message.content!r}")
    expect(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}")
    got = (completion.usage.prompt_tokens, completion.usage.completion_tokens)
    expect(got == GEMINI_USAGE, f"usage {got}, expected {GEMINI_USAGE}")
    return f"{choice.message.content!r} via Gemini"


def gemini_stream():
    stream = client.chat.completions.create(
        model=GEMINI_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expect(text == GEMINI_REPLY, f"streamed text {text!r}")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    expect(finishes == ["stop"], f"finish reasons {finishes}")
    last = chunks[-1]
    expect(last.choices == [] and last.usage is not None, "no final usage chunk")
    got = (last.usage.prompt_tokens, last.usage.completion_tokens)
    expect(got == GEMINI_USAGE, f"usage {got}, expected {GEMINI_USAGE}")
    return f"{len(chunks)} chunks via Gemini"


def gemini_tool_round_trip():
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=GEMINI_MODEL, messages=question, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    expect(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}")
    calls = choice.message.tool_calls or []
    expect(len(calls) == 1 and calls[0].function.name == "weather", f"tool calls {calls}")
    expect(json.loads(calls[0].function.arguments) == {"city": "Paris"}, f"arguments {calls[0].function.arguments!r}")
    history = question + [
        {"role": "assistant", "content": choice.message.content, "tool_calls": [c.model_dump() for c in calls]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "18C"},
    ]
    final = client.chat.completions.create(model=GEMINI_MODEL, messages=history, tools=[WEATHER_TOOL])
    answer = final.choices[0].message.content
    expect(answer == "It is 18C.", f"final answer {answer!r}")
    return f"call {calls[0].id} -> {answer!r}"


def codex_chat():
    # The Codex backend only streams: the gateway collects its stream into one answer.
    completion = client.chat.completions.create(
        model=CODEX_MODEL, messages=[{"role": "system", "content": "Be brief."}] + MESSAGES
    )
    expect(completion.object == "chat.completion", f"object {completion.object!r}")
    expect(completion.model == CODEX_UPSTREAM_MODEL, f"model {completion.model!r}")
    choice = completion.choices[0]
    expect(choice.message.content == CODEX_REPLY, f"content {choice.message.content!r}")
    expect(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}")
    got = (completion.usage.prompt_tokens, completion.usage.completion_tokens)
    expect(got == CODEX_USAGE, f"usage {got}, expected {CODEX_USAGE}")
    expect(completion.usage.prompt_tokens_details.cached_tokens == 4, f"usage {completion.usage}")
    return f"{choice.message.content!r} via Codex"


def codex_stream():
    stream = client.chat.completions.create(
        model=CODEX_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expect(text == CODEX_REPLY, f"streamed text {text!r}")
    last = chunks[-1]
    expect(last.choices == [] and last.usage is not None, "no final usage chunk")
    got = (last.usage.prompt_tokens, last.usage.completion_tokens)
    expect(got == CODEX_USAGE, f"usage {got}, expected {CODEX_USAGE}")
    return f"{len(chunks)} chunks via Codex"


def chat_tool_round_trip(model, answer):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=question, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    expect(choice.finish_reason == "tool_calls", f"{model}: finish_reason {choice.finish_reason!r}")
    calls = choice.message.tool_calls or []
    expect(len(calls) == 1 and calls[0].function.name == "weather", f"{model}: tool calls {calls}")
    expect(json.loads(calls[0].function.arguments) == {"city": "Paris"}, f"{model}: {calls[0].function.arguments!r}")
    history = question + [
        {"role": "assistant", "content": choice.message.content, "tool_calls": [c.model_dump() for c in calls]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "18C"},
    ]
    final = client.chat.completions.create(model=model, messages=history, tools=[WEATHER_TOOL])
    got = final.choices[0].message.content
    expect(got == answer, f"{model}: final answer {got!r}, expected {answer!r}")
    return f"{model}: call {calls[0].id} -> {got!r}"


# The Responses API on every family: (public model, expected text, expected input tokens).
RESPONSES_ROUTES = [
    (CHAT_MODEL, "".join(REPLY_PIECES), PROMPT_TOKENS),
    (CLAUDE_MODEL, "".join(CLAUDE_PIECES), CLAUDE_USAGE[0]),
    (GEMINI_MODEL, GEMINI_REPLY, GEMINI_USAGE[0]),
    (CODEX_MODEL, CODEX_REPLY, CODEX_USAGE[0]),
]
RESPONSES_WEATHER = {"type": "function", **WEATHER_TOOL["function"]}


def responses_plain(model, text, input_tokens):
    response = client.responses.create(model=model, instructions="Be brief.", input="Say hello.")
    expect(response.object == "response", f"{model}: object {response.object!r}")
    expect(response.status == "completed", f"{model}: status {response.status!r}")
    expect(response.output_text == text, f"{model}: text {response.output_text!r}, expected {text!r}")
    expect(response.usage.input_tokens == input_tokens, f"{model}: usage {response.usage}")
    return f"{model}: {response.output_text!r}"


def responses_stream(model, text, input_tokens):
    deltas = []
    with client.responses.stream(model=model, input="Say hello.") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    expect("".join(deltas) == text, f"{model}: streamed {deltas}, expected {text!r}")
    expect(final.output_text == text, f"{model}: final {final.output_text!r}")
    expect(final.usage.input_tokens == input_tokens, f"{model}: usage {final.usage}")
    return f"{model}: {len(deltas)} deltas"


def responses_tool_round_trip(model, answer):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.responses.create(model=model, input=[question], tools=[RESPONSES_WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    expect(len(calls) == 1 and calls[0].name == "weather", f"{model}: output {first.output}")
    expect(json.loads(calls[0].arguments) == {"city": "Paris"}, f"{model}: arguments {calls[0].arguments!r}")
    call = {"type": "function_call", "call_id": calls[0].call_id, "name": "weather", "arguments": calls[0].arguments}
    result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C"}
    final = client.responses.create(model=model, input=[question, call, result], tools=[RESPONSES_WEATHER])
    expect(final.output_text == answer, f"{model}: final {final.output_text!r}, expected {answer!r}")
    return f"{model}: call {calls[0].call_id} -> {final.output_text!r}"


def responses_stateful_refused():
    try:
        client.responses.create(model=CLAUDE_MODEL, input="And then?", previous_response_id="resp_1")
    except openai.BadRequestError as e:
        expect(e.param == "previous_response_id", f"param {e.param!r}")
        return f"BadRequestError {e.code} ({e.param})"
    raise AssertionError("no BadRequestError")


def bound(check, *args):
    def run():
        return check(*args)

    run.__name__ = f"{check.__name__}[{args[0]}]"
    return run


CHECKS = [
    chat_completion,
    chat_stream,
    chat_stream_with_usage,
    embeddings_base64,
    embeddings_float,
    models_list,
    wrong_key,
    unknown_model,
    claude_chat,
    claude_stream,
    claude_tool_round_trip,
    claude_tool_stream,
    gemini_chat,
    gemini_stream,
    gemini_tool_round_trip,
    codex_chat,
    codex_stream,
    bound(chat_tool_round_trip, CHAT_MODEL, "Result: 18C"),
    bound(chat_tool_round_trip, CODEX_MODEL, "Result: 18C"),
    responses_stateful_refused,
]
CHECKS += [bound(responses_plain, *route) for route in RESPONSES_ROUTES]
CHECKS += [bound(responses_stream, *route) for route in RESPONSES_ROUTES]
CHECKS += [
    bound(responses_tool_round_trip, CHAT_MODEL, "Result: 18C"),
    bound(responses_tool_round_trip, CLAUDE_MODEL, "It is 18C in Paris."),
    bound(responses_tool_round_trip, GEMINI_MODEL, "It is 18C."),
    bound(responses_tool_round_trip, CODEX_MODEL, "Result: 18C"),
]


def main():
    print(f"openai {openai.__version__} against {client.base_url}")
    failed = 0
    for check in CHECKS:
        try:
            detail = check()
            print(f"ok   {check.__name__}: {detail}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL {check.__name__}: {type(e).__name__}: {e}")
            traceback.print_exc()
    print(f"{len(CHECKS) - failed} of {len(CHECKS)} checks ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
