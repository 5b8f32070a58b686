"""gateway.adapters.openai_compat: the native OpenAI-compatible client against loopback servers.

What it sends (URL, headers, body) is read from the scripted fake upstream's records; replies
it cannot read come from a server that answers with exactly the bytes a test sets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from pydantic import SecretStr

from gateway.adapters.base import (
    ChatCall,
    ChatEvent,
    EmbeddingCall,
    MediaInput,
    TokenUsage,
    ToolCallDelta,
    UpstreamContext,
)
from gateway.adapters.litellm_chat import LiteLLMChatAdapter
from gateway.adapters.openai_compat import OpenAICompatChat, OpenAICompatEmbedding
from gateway.config import TargetConfig
from gateway.errors import (
    BadRequest,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from gateway.http_client import HttpClient
from gateway.routing import Target
from gateway.trace import Trace, current_trace
from tests.fakes.loopback import LoopbackServer
from tests.fakes.upstream import Chat, Completion, FakeUpstream, ToolCallSpec

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "sk-native-secret-42"
CTX = UpstreamContext(route="r-chat", provider="langgenius/openai/openai", model="gpt-4o-mini")
WHERE = "route 'r-chat', provider 'langgenius/openai/openai', model 'gpt-4o-mini' -> 'openai/gpt-4o-mini'"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


class CannedUpstream(LoopbackServer):
    """Answers every request with the reply set last: status, content type and body bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.reply(b"{}")

    def reply(
        self, body: bytes, *, status: int = 200, sse: bool = False, headers: dict[str, str] | None = None
    ) -> None:
        self._reply = (body, status, "text/event-stream" if sse else "application/json", headers or {})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        body, status, content_type, headers = self._reply
        return web.Response(body=body, status=status, content_type=content_type, headers=headers)


@pytest.fixture(scope="module")
def canned() -> Iterator[CannedUpstream]:
    with CannedUpstream() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    yield client
    await client.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(http: HttpClient) -> AsyncIterator[OpenAICompatChat]:
    fallback = LiteLLMChatAdapter()
    yield OpenAICompatChat(http, fallback)
    await fallback.aclose()


def target(api_base: str | None, model: str = "openai/gpt-4o-mini", **config: Any) -> Target:
    return Target(config=TargetConfig(model=model, api_base=api_base, **config), model=model)


def chat(t: Target, *, stream: bool, **fields: Any) -> ChatCall:
    return ChatCall(target=t, context=CTX, messages=MESSAGES, stream=stream, timeout_s=10.0, **fields)


async def collect(client: OpenAICompatChat, call: ChatCall) -> tuple[list[ChatEvent], UpstreamError | None]:
    """The events delivered, and the error that ended the stream (if one did)."""
    events: list[ChatEvent] = []
    try:
        async for event in client.chat(call):
            events.append(event)
    except UpstreamError as exc:
        return events, exc
    return events, None


# -- what is sent --------------------------------------------------------------------------


async def test_a_streamed_request(client: OpenAICompatChat, fake: FakeUpstream) -> None:
    t = target(fake.base_url, api_key=SecretStr(SECRET), organization="org-7", headers={"X-Team": "search"})
    call = chat(
        t,
        stream=True,
        params={"temperature": 0.1, "max_tokens": 50},
        tools=TOOLS,
        tool_choice="auto",
        stop=["END"],
    )
    await collect(client, call)
    (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["openai-organization"] == "org-7"
    assert sent.headers["x-team"] == "search"
    assert "traceparent" not in sent.headers
    assert sent.json == {
        "model": "gpt-4o-mini",  # without litellm's provider prefix
        "messages": MESSAGES,
        "temperature": 0.1,
        "max_tokens": 50,
        "tools": TOOLS,
        "tool_choice": "auto",
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},  # usage comes in a last chunk only if asked for
    }


async def test_a_plain_request_sends_only_what_is_set(client: OpenAICompatChat, fake: FakeUpstream) -> None:
    # A tool_choice without tools, and an empty stop list, are not sent; nor is an absent key.
    call = chat(target(fake.base_url + "/", model="hosted_vllm/llama-3"), stream=False, tool_choice="auto", stop=[])
    await collect(client, call)
    (sent,) = fake.requests
    assert sent.path == "/v1/chat/completions"  # the api_base's trailing slash is not doubled
    assert sent.json == {"model": "llama-3", "messages": MESSAGES}
    assert "authorization" not in sent.headers and "openai-organization" not in sent.headers


async def test_the_callers_trace_continues_upstream(client: OpenAICompatChat, fake: FakeUpstream) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    token = current_trace.set(Trace(traceparent=traceparent))
    try:
        await collect(client, chat(target(fake.base_url), stream=False))
    finally:
        current_trace.reset(token)
    assert fake.requests[-1].headers["traceparent"] == traceparent


async def test_openai_targets_default_to_the_openai_api(client: OpenAICompatChat) -> None:
    # Not sent anywhere: where the request would go is all there is to see.
    url, _, _ = client._request(chat(target(None), stream=False))
    assert url == "https://api.openai.com/v1/chat/completions"


async def test_other_targets_need_an_api_base(client: OpenAICompatChat) -> None:
    events, error = await collect(client, chat(target(None, model="hosted_vllm/llama-3"), stream=True))
    assert events == []
    assert isinstance(error, UpstreamUnavailable)
    assert str(error) == "target 'hosted_vllm/llama-3' needs an api_base for the native OpenAI-compatible client"


async def test_completion_mode_goes_to_the_fallback(client: OpenAICompatChat, fake: FakeUpstream) -> None:
    fake.script("instruct", Completion(deltas=["Once", " upon"]))
    events, error = await collect(
        client, chat(target(fake.base_url, model="openai/instruct"), stream=False, prompt="Hi")
    )
    assert error is None
    assert [r.path for r in fake.requests] == ["/v1/completions"]  # litellm's text completion
    assert [e.text for e in events] == ["Once upon"]


# -- what is read --------------------------------------------------------------------------


async def test_a_whole_reply(client: OpenAICompatChat, fake: FakeUpstream) -> None:
    fake.script(
        "gpt-4o-mini",
        Chat(
            content_text="Let me look.",
            tool_calls=[ToolCallSpec("get_weather", '{"city": "Rome"}', id="call_a")],
            usage=(812, 6),
            system_fingerprint="fp_1",
        ),
    )
    events, error = await collect(client, chat(target(fake.base_url), stream=False, tools=TOOLS))
    assert error is None
    assert events == [
        ChatEvent(
            text="Let me look.",
            tool_calls=[ToolCallDelta(index=0, id="call_a", name="get_weather", arguments='{"city": "Rome"}')],
            finish_reason="tool_calls",
            usage=TokenUsage(812, 6),
            model="gpt-4o-mini",
            system_fingerprint="fp_1",
        )
    ]


async def test_a_stream(client: OpenAICompatChat, fake: FakeUpstream) -> None:
    fake.script(
        "gpt-4o-mini",
        Chat(deltas=["Hel", "lo"], tool_calls=[ToolCallSpec("f", '{"a": 1}', id="call_f")], tool_call_split=2),
    )
    events, error = await collect(client, chat(target(fake.base_url), stream=True, tools=TOOLS))
    assert error is None
    common = {"model": "gpt-4o-mini"}
    assert events == [
        ChatEvent(text="Hel", **common),
        ChatEvent(text="lo", **common),
        ChatEvent(tool_calls=[ToolCallDelta(index=0, id="call_f", name="f", arguments='{"a"')], **common),
        ChatEvent(tool_calls=[ToolCallDelta(index=0, arguments=": 1}")], **common),
        ChatEvent(finish_reason="tool_calls", **common),
        ChatEvent(usage=TokenUsage(10, 5)),
    ]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"<html>Bad gateway</html>", "not JSON"),
        (b"[1, 2]", "not a chat completion"),
        (b'{"choices": "Hello"}', "not a chat completion"),
        (b'{"choices": [null]}', "not a chat completion"),
        (b'{"choices": [{"message": "Hello"}]}', "a str where an object with 'content' belongs"),
        (b'{"choices": [{"message": {"tool_calls": ["f"]}}]}', "a str where an object with 'function' belongs"),
        (b'{"choices": [{"message": {}}], "usage": {"prompt_tokens": "many"}}', "usage counts 'many', None"),
    ],
)
async def test_a_malformed_reply(client: OpenAICompatChat, canned: CannedUpstream, body: bytes, detail: str) -> None:
    canned.reply(body)
    events, error = await collect(client, chat(target(f"http://127.0.0.1:{canned.port}"), stream=False))
    assert events == []
    assert isinstance(error, UpstreamUnavailable)
    assert str(error).startswith(f"malformed reply from upstream ({WHERE}): {detail}")


GOOD = b'data: {"model": "m", "choices": [{"delta": {"content": "Hi"}}]}\n\n'


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"data: {not json\n\n", f"malformed stream from upstream ({WHERE}): a chunk is not JSON"),
        (b"data: [1]\n\n", f"malformed stream from upstream ({WHERE}): a chunk is not an object"),
        (
            b'data: {"choices": {"0": {}}}\n\n',
            f"malformed stream from upstream ({WHERE}): 'choices' is a dict, not a list",
        ),
        (
            b'data: {"choices": [{"delta": "Hi"}]}\n\n',
            f"malformed stream from upstream ({WHERE}): a choice or its delta is not an object",
        ),
        (b'data: {"error": {"message": "overloaded"}}\n\n', f"upstream failed mid-stream ({WHERE}): overloaded"),
        (b'data: {"error": "quota"}\n\n', f"upstream failed mid-stream ({WHERE}): quota"),
        # A stream that stops without a finish reason (and without [DONE]) was cut short.
        (b"", f"upstream stream ended before the answer was finished ({WHERE})"),
    ],
)
async def test_a_broken_stream_ends_with_an_error(
    client: OpenAICompatChat, canned: CannedUpstream, line: bytes, message: str
) -> None:
    canned.reply(GOOD + line, sse=True)
    events, error = await collect(client, chat(target(f"http://127.0.0.1:{canned.port}"), stream=True))
    assert events == [ChatEvent(text="Hi", model="m")]  # what came before the fault is delivered
    assert isinstance(error, UpstreamUnavailable)
    assert str(error) == message


async def test_a_finished_stream_needs_no_done_line(client: OpenAICompatChat, canned: CannedUpstream) -> None:
    finish = b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n'
    canned.reply(b": keep-alive\n\nevent: message\n" + GOOD + finish, sse=True)
    events, error = await collect(client, chat(target(f"http://127.0.0.1:{canned.port}"), stream=True))
    assert error is None
    assert events == [ChatEvent(text="Hi", model="m"), ChatEvent(finish_reason="stop")]


async def test_an_error_status_keeps_its_class_and_hides_the_key(
    client: OpenAICompatChat, canned: CannedUpstream
) -> None:
    t = target(f"http://127.0.0.1:{canned.port}", api_key=SecretStr(SECRET))
    canned.reply(
        b'{"error": {"message": "slow down, ' + SECRET.encode() + b'"}}', status=429, headers={"Retry-After": "3"}
    )
    _, error = await collect(client, chat(t, stream=True))
    assert isinstance(error, UpstreamRateLimited)
    assert (error.upstream_status, error.retry_after_s) == (429, 3.0)
    assert str(error) == f"upstream error HTTP 429 ({WHERE}): slow down, ***"
    canned.reply(b'{"error": {"message": "bad key"}}', status=401)
    _, error = await collect(client, chat(t, stream=False))
    assert isinstance(error, UpstreamAuthError)


# -- embeddings ----------------------------------------------------------------------------


async def test_embedding_without_inputs_sends_nothing(http: HttpClient, fake: FakeUpstream) -> None:
    call = EmbeddingCall(target=target(fake.base_url), context=CTX, inputs=[], input_type="document")
    output = await OpenAICompatEmbedding(http).embed(call)
    assert (output.vectors, output.tokens) == ([], None)
    assert fake.requests == []


async def test_embedding_refuses_files_before_sending(http: HttpClient, fake: FakeUpstream) -> None:
    inputs = [MediaInput.text("a"), MediaInput("image", "aGk=")]
    call = EmbeddingCall(target=target(fake.base_url), context=CTX, inputs=inputs, input_type="document")
    with pytest.raises(BadRequest, match=r"cannot embed image inputs \(input 1; route 'r-chat'"):
        await OpenAICompatEmbedding(http).embed(call)
    assert fake.requests == []
