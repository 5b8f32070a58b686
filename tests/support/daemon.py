"""Independent oracle: how the real dify-plugin-daemon reads the inner-API replies.

Ported from langgenius/dify-plugin-daemon HEAD bdb5642a (go 1.26, go-playground/validator v10.30.1,
shopspring/decimal v1.4.0). Paths below are in that repository unless said otherwise. This module must not
import `gateway`: it is the yardstick the gateway is measured against.

Pipeline ported:
* streams (llm, llm/structured-output, tts): pkg/utils/http_requests/http_warpper.go:78-170
  (status != 200 check, LengthPrefixedChunking, processData: decode+validate or *drop*), then
  internal/core/dify_invocation/calldify/http_request.go:53-117 (error / data-nil checks);
* unary replies: http_warpper.go:18-56 (json.Decoder.Decode of the first value, status ignored), then
  calldify/http_request.go:18-51 (error, data nil, validator).
Go encoding/json rules reproduced: exact-then-case-insensitive key match, unknown keys ignored, null into a
non-pointer is a no-op (but UnmarshalJSON methods *are* called with null), a type mismatch fails the decode
(the first such error is reported), ints must be integer literals within int64, later duplicate keys win.

Where the Go code says more than (or differs from) shared/spec/dify-inner-api.md:
* §11.1 holds for llm/structured frames only: TTSResult has no validate tags (tts.go:3), so a TTS frame
  {"data": {}, "error": "boom"} *does* end the stream with "request failed: boom".
* §2.3 "error wins even if data is set" holds for unary replies only if `data` decodes: a JSON type
  mismatch in `data` fails RequestAndParse (http_warpper.go:50) before `error` is read (calldify/http_request.go:33).
* §4.6 "no validation" (speech2text/moderation/summary) is true of the validator, but JSON types still
  matter: {"result": "true"} for moderation is an error.
* Framing errors are errors.Join texts (chunking.go:64,82,98): "unexpected EOF\nfailed to read system header",
  "EOF\nfailed to read header" / "unexpected EOF\nfailed to read header", "EOF\nfailed to read data".
* Stream status must be exactly 200 (http_warpper.go:84): 201/204 are failures too.
* Frames are queued with a non-blocking Stream.Write into a 1024-entry queue whose error is ignored
  (http_warpper.go:126, calldify/http_request.go:78,112, pkg/utils/stream/stream.go:153-173): a burst of
  >1024 frames ahead of the consumer is silently lost. Timing-dependent, not modelled here.
* Decimals are parsed from the raw literal (decimal.go:1764): "+1", ".5", "1." and "1e-7" pass; a string
  with a JSON escape ("\u0031"), spaces, "" or booleans/objects fails.
* A reply message with "opaque_body": null is re-emitted with "opaque_body": null (RawMessage, llm.go:61);
  "content": [], "embeddings": [] and "docs": [] are accepted; structured_output must be an object or null.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

DEFAULT_MAX_FRAME = 31457280  # RESPONSE_MAX_BUFFER_SIZE default (internal/types/app/config.go), 30 MiB
_ABSENT: Any = type("_Absent", (), {"__repr__": lambda self: "<absent>"})()  # json.RawMessage of length 0


# ----------------------------------------------------------------------------------------------- framing
class FrameError(Exception):
    """A framing error, worded like pkg/utils/parser/chunking.go. `frames` = frames complete before it."""

    def __init__(self, message: str, frames: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.frames = frames or []


def _scan(buf: bytes | bytearray, max_size: int, eof: bool) -> tuple[list[bytes], int, str | None]:
    """Port of parser.LengthPrefixedChunking (pkg/utils/parser/chunking.go:47-107).

    Returns (frames, bytes consumed, error). Errors are errors.Join(err, msg), i.e. "<io err>\\n<msg>":
    io.ReadFull gives EOF when it read nothing and "unexpected EOF" on a partial read; io.CopyN gives
    EOF for any short payload. Byte 1 and the 6 trailing header bytes are never looked at.
    """
    frames: list[bytes] = []
    pos, n = 0, len(buf)
    limit = max_size & 0xFFFFFFFF  # http_warpper.go:138 passes uint32(maxChunkSize)
    while pos < n:
        if n - pos < 4:
            return frames, pos, ("unexpected EOF\nfailed to read system header" if eof else None)
        if buf[pos] != 0x0F:
            return frames, pos, f"magic number mismatch: {buf[pos]}"
        header_len = int.from_bytes(buf[pos + 2 : pos + 4], "little")
        if header_len != 0x0A:
            return frames, pos, f"header length mismatch: {header_len}"
        if n - pos < 14:
            if not eof:
                return frames, pos, None
            return frames, pos, ("EOF" if n - pos == 4 else "unexpected EOF") + "\nfailed to read header"
        length = int.from_bytes(buf[pos + 4 : pos + 8], "little")
        if length > limit:
            return frames, pos, f"data length is too long: {length}"
        if n - pos - 14 < length:
            return frames, pos, ("EOF\nfailed to read data" if eof else None)
        frames.append(bytes(buf[pos + 14 : pos + 14 + length]))
        pos += 14 + length
    return frames, pos, None  # clean EOF only here, at a frame boundary


def split_frames(body: bytes, max_size: int = DEFAULT_MAX_FRAME) -> list[bytes]:
    """Parse a whole body; FrameError (with the daemon's message) unless it ends cleanly at a boundary."""
    frames, _, err = _scan(body, max_size, eof=True)
    if err is not None:
        raise FrameError(err, frames)
    return frames


class FrameReader:
    """Incremental LengthPrefixedChunking: feed() any split of the body, then close() at end of body."""

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_size
        self._failed: FrameError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self._failed is not None:
            raise self._failed
        self._buf += data
        frames, used, err = _scan(self._buf, self._max, eof=False)
        del self._buf[:used]
        if err is not None:
            self._failed = FrameError(err, frames)
            raise self._failed
        return frames

    def close(self) -> None:
        if self._failed is not None:
            raise self._failed
        _, _, err = _scan(self._buf, self._max, eof=True)
        if err is not None:
            self._failed = FrameError(err)
            raise self._failed


# ------------------------------------------------------------------- JSON text -> values that keep raw text
class _Str(str):  # a JSON string that remembers its literal (quotes and escapes): shopspring decimal sees that
    raw: str


class _Num(str):  # a JSON number kept as its literal: Go parses it per target type (ParseInt/ParseFloat/decimal)
    pass


class _Obj(list[tuple[str, Any]]):  # a JSON object as ordered (key, value) pairs, duplicates included
    pass


def _fix_surrogates(s: str) -> str:
    # Go replaces a lone \ud800-style escape by U+FFFD; Python keeps the lone surrogate.
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace") if re.search("[\ud800-\udfff]", s) else s


_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _parse_string(s: str, end: int, strict: bool) -> tuple[str, int]:
    val, new_end = _scanstring(s, end, strict)
    out = _Str(_fix_surrogates(val))
    out.raw = s[end - 1 : new_end]
    return out, new_end


def _number(text: str) -> _Num:
    if not text.isascii():  # Python's \d also matches non-ASCII digits; Go's scanner does not
        raise ValueError(f"invalid character in number {text!r}")
    return _Num(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")  # NaN/Infinity


_DECODER = json.JSONDecoder(
    object_pairs_hook=_Obj, parse_float=_number, parse_int=_number, parse_constant=_no_constant, strict=True
)
_DECODER.parse_string = _parse_string  # type: ignore[attr-defined]
_DECODER.scan_once = json.scanner.py_make_scanner(_DECODER)  # type: ignore[attr-defined]


def _parse_whole(text: str) -> Any:
    """json.Unmarshal: one value, only whitespace around it (parser/json.go:16 on every stream frame)."""
    try:
        return _DECODER.decode(text)
    except RecursionError as e:  # Go allows depth 10000; CPython's recursive scanner gives up sooner
        raise ValueError("exceeded max depth") from e


# ------------------------------------------------------------------------------ the daemon's Go types
@dataclass(frozen=True)
class Ptr:
    elem: GoType


@dataclass(frozen=True)
class Slice:
    elem: GoType


class F:
    """A struct field: json name, type, `validate` tag, json omitempty, Go name (validator namespace)."""

    def __init__(self, js: str, t: GoType, v: str = "", omit: bool = False, go: str = "") -> None:
        self.js, self.t, self.tags, self.omit = js, t, [x for x in v.split(",") if x], omit
        self.go = go or "".join(w.title() for w in js.split("_"))


class Struct:
    def __init__(
        self,
        name: str,
        fields: list[F],
        pkg: str = "model_entities",
        unmarshal: Callable[[Any, _St], dict[str, Any]] | None = None,
    ) -> None:
        self.name, self.fields, self.pkg, self.unmarshal = name, fields, pkg, unmarshal
        self.exact = {f.js: f for f in fields}
        self.folded = {_fold(f.js): f for f in fields}


# Scalars: "str" "int"(Go int) "float"(float64) "bool" "dec"(decimal.Decimal) "raw"(json.RawMessage)
# "any"(interface{}) "map"(map[string]any) "content"(PromptMessage.Content, an interface{}).
GoType = str | Ptr | Slice | Struct


def _fold(key: str) -> str:
    # encoding/json foldName: ASCII upper-case; the only non-ASCII runes folding onto ASCII are ſ and K (Kelvin).
    return "".join(c.upper() if c.isascii() else {"ſ": "S", "\u212a": "K"}.get(c, c) for c in key)


class _St:
    def __init__(self) -> None:
        self.errors: list[str] = []  # UnmarshalTypeErrors in order; Go reports errors[0] and decodes on


class _Abort(Exception):  # an error returned by an UnmarshalJSON method: Go stops decoding at once
    pass


_GO_NAMES = {
    "str": "string",
    "int": "int",
    "float": "float64",
    "bool": "bool",
    "dec": "decimal.Decimal",
    "raw": "json.RawMessage",
    "map": "map[string]interface {}",
    "any": "interface {}",
    "content": "any",
}


def _tname(t: GoType) -> str:
    if isinstance(t, Ptr):
        return _tname(t.elem)
    if isinstance(t, Slice):
        return "[]" + _tname(t.elem)
    return f"{t.pkg}.{t.name}" if isinstance(t, Struct) else _GO_NAMES[t]


def _zero(t: GoType) -> Any:
    if isinstance(t, Struct):
        return {f.js: _zero(f.t) for f in t.fields}
    return (
        {"str": "", "int": 0, "float": 0.0, "bool": False, "dec": (0, 0), "raw": _ABSENT}.get(t)
        if isinstance(t, str)
        else None
    )


def _kind(v: Any) -> str:
    return (
        "null"
        if v is None
        else "bool"
        if isinstance(v, bool)
        else "number"
        if isinstance(v, _Num)
        else "string"
        if isinstance(v, str)
        else "object"
        if isinstance(v, _Obj)
        else "array"
    )


def _plain(v: Any, go_any: bool, st: _St | None = None) -> Any:
    """interface{} (go_any: numbers become float64, overflow is an error) or RawMessage (kept verbatim)."""
    if isinstance(v, _Obj):
        return {k: _plain(x, go_any, st) for k, x in v}  # later duplicates win, as with a Go map
    if isinstance(v, list):
        return [_plain(x, go_any, st) for x in v]
    if isinstance(v, _Num):
        if not go_any and re.fullmatch(r"-?\d+", v):
            return int(v)
        f = float(v)
        if go_any and st is not None and math.isinf(f):
            st.errors.append(f"json: cannot unmarshal number {v} into Go value of type float64")
        return int(f) if go_any and f.is_integer() and abs(f) < 1e21 else f  # Go prints float64 2.0 as 2
    return str(v) if isinstance(v, str) else v


def _parse_int(s: str, bits: int) -> int | None:
    """strconv.ParseInt(s, 10, bits): optional sign, ASCII digits only, range-checked."""
    if not re.fullmatch(r"[+-]?[0-9]+", s):
        return None
    n = int(s)
    return n if -(1 << (bits - 1)) <= n < (1 << (bits - 1)) else None


def parse_decimal(text: str) -> tuple[int, int] | None:
    """shopspring/decimal v1.4.0 NewFromString (decimal.go:180-249) -> (coefficient, exponent) or None."""
    exp = 0
    e = min((i for i in (text.find("e"), text.find("E")) if i >= 0), default=-1)
    if e >= 0:
        parsed = _parse_int(text[e + 1 :], 32)
        if parsed is None:
            return None
        text, exp = text[:e], parsed
    if text.count(".") > 1:
        return None
    point = text.find(".")
    digits = text if point < 0 else text[:point] + text[point + 1 :]
    if point >= 0:
        exp -= len(text) - point - 1
    # len <= 18: ParseInt(.., 64); longer: big.Int.SetString(.., 10) - same syntax, no range limit.
    value = (
        _parse_int(digits, 64) if len(digits) <= 18 else (int(digits) if re.fullmatch(r"[+-]?[0-9]+", digits) else None)
    )
    if value is None or not -(2**31) <= exp < 2**31:
        return None
    return value, exp


def decimal_string(value: int, exp: int) -> str:
    """Decimal.String() (decimal.go string(trimTrailingZeros=true)); MarshalJSON wraps it in quotes."""
    if exp >= 0:
        return str(value * 10**exp)
    digits, places = str(abs(value)), -exp
    if len(digits) > places:
        whole, frac = digits[: len(digits) - places], digits[len(digits) - places :]
    else:
        whole, frac = "0", "0" * (places - len(digits)) + digits
    frac = frac.rstrip("0")
    number = whole + ("." + frac if frac else "")
    return "-" + number if value < 0 else number


def _dec(t: GoType, v: Any, cur: Any, sname: str, path: list[str], st: _St) -> Any:
    """Decode JSON value v into Go type t whose current value is cur; returns the new value."""

    def mismatch(what: str) -> Any:
        where = f"Go struct field {sname}.{'.'.join(path)}" if path else "Go value"
        st.errors.append(f"json: cannot unmarshal {what} into {where} of type {_tname(t)}")
        return cur  # Go skips the field and carries on

    if isinstance(t, Ptr):
        return None if v is None else _dec(t.elem, v, _zero(t.elem) if cur is None else cur, sname, path, st)
    if t == "dec":  # decimal.(*Decimal).UnmarshalJSON, decimal.go:1764: sees the raw literal, even null
        if v is None:
            return cur  # "null" -> return nil, value untouched: absent/null decimals are fine
        raw = v.raw if isinstance(v, _Str) else str(v) if isinstance(v, _Num) else None
        if raw is not None and len(raw) > 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]  # unquoteIfQuoted: needs len > 2, so `""` stays `""` and fails; escapes stay escaped
        parsed = parse_decimal(raw) if raw is not None else None
        if parsed is None:
            shown = raw if raw is not None else _kind(v)  # (for bool/object/array Go shows the literal)
            raise _Abort(f"error decoding string '{shown}': can't convert {shown} to decimal")
        return parsed
    if t == "raw":
        return v  # RawMessage.UnmarshalJSON keeps any literal, "null" included (made plain when emitted)
    if isinstance(t, Struct) and t.unmarshal is not None:
        return t.unmarshal(v, st)  # UnmarshalJSON replaces the whole value (and is called for null too)
    if v is None:  # null into interface/map/slice -> nil; into anything else: no effect
        return None if t in ("any", "map") or isinstance(t, Slice) else cur
    kind = _kind(v)
    if t == "any":
        return _plain(v, True, st)
    if t == "str":
        return str(v) if kind == "string" else mismatch(kind)
    if t == "bool":
        return v if kind == "bool" else mismatch(kind)
    if t == "int":
        if kind != "number":
            return mismatch(kind)
        n = _parse_int(v, 64) if re.fullmatch(r"-?[0-9]+", v) else None
        return mismatch(f"number {v}") if n is None else n  # 1.0, 1e2 or > int64 -> error
    if t == "float":
        if kind != "number":
            return mismatch(kind)
        return mismatch(f"number {v}") if math.isinf(float(v)) else float(v)
    if t == "map":
        if kind != "object":
            return mismatch(kind)
        merged = dict(cur or {})  # Go reuses an existing map and keeps its entries
        merged.update({k: _plain(x, True, st) for k, x in v})
        return dict(sorted(merged.items()))  # json.Marshal sorts map keys
    if isinstance(t, Slice):
        if kind != "array":
            return mismatch(kind)
        old = cur or []  # elements decode into the existing ones (duplicate keys)
        return [_dec(t.elem, x, old[i] if i < len(old) else _zero(t.elem), sname, path, st) for i, x in enumerate(v)]
    if isinstance(t, Struct):
        if kind != "object":
            return mismatch(kind)
        out = dict(cur)
        for key, x in v:
            f = t.exact.get(key) or t.folded.get(_fold(key))
            if f is not None:  # unknown keys are ignored
                out[f.js] = _dec(f.t, x, out[f.js], t.name, [*path, f.js], st)
        return out
    raise AssertionError(t)


# --------------------------------------------------------------------- pkg/entities/model_entities/llm.go
_TOOL_CALL = Struct(
    "PromptMessageToolCall",
    [  # llm.go:118, no validate tags at all
        F("id", "str", go="ID"),
        F("type", "str"),
        F("function", Struct("", [F("name", "str"), F("arguments", "str")])),
    ],
)
_CONTENT_ITEM = Struct(
    "PromptMessageContent",
    [  # llm.go:105
        F("type", "str", "required,prompt_message_content_type"),
        F("base64_data", "str"),
        F("url", "str", go="URL"),
        *(F(j, "str") for j in ("data", "encode_format", "format", "mime_type", "detail", "filename")),
        F("opaque_body", "raw", omit=True),
    ],
)
_PM_JSON = Struct(
    "promptMessageJSON",
    [  # the shadow struct inside PromptMessage.UnmarshalJSON, llm.go:170
        F("role", "str"),
        F("content", "raw"),
        F("name", "str"),
        F("tool_calls", Slice(_TOOL_CALL)),
        F("tool_call_id", "str"),
        F("opaque_body", "raw"),
    ],
)


def _unmarshal_prompt_message(v: Any, st: _St) -> dict[str, Any]:
    """PromptMessage.UnmarshalJSON + unmarshalPromptMessageContent (llm.go:145-207)."""
    inner = _St()  # a nested json.Unmarshal: its first type error is returned and aborts the outer decode
    raw = _dec(_PM_JSON, v, _zero(_PM_JSON), "promptMessageJSON", [], inner)  # null -> all zero
    if inner.errors:
        raise _Abort(inner.errors[0])
    if raw["role"] == "":
        raise _Abort("role field is required")
    content = raw["content"]
    if content is _ABSENT or content is None:  # absent (len 0) or the literal null
        raise _Abort("content field is required")
    if isinstance(content, _Str):  # first byte '"'
        content = str(content)
    elif isinstance(content, list) and not isinstance(content, _Obj):  # first byte '['
        items = _St()
        content = _dec(Slice(_CONTENT_ITEM), content, None, "", [], items)
        if items.errors:
            raise _Abort(items.errors[0])
    else:  # numbers, booleans, objects
        raise _Abort("content must be a string or an array of prompt message content")
    return {
        "role": raw["role"],
        "content": content,
        "name": raw["name"],
        "tool_calls": raw["tool_calls"],
        "tool_call_id": raw["tool_call_id"],
        "opaque_body": raw["opaque_body"],
    }


_PROMPT_MESSAGE = Struct(
    "PromptMessage",
    [  # llm.go:55
        F("role", "str", "required,prompt_message_role"),
        F("content", "content", "required,prompt_message_content"),
        F("name", "str"),
        F("tool_calls", Slice(_TOOL_CALL), "dive"),
        F("tool_call_id", "str"),
        F("opaque_body", "raw", omit=True),
    ],
    unmarshal=_unmarshal_prompt_message,
)
_PRICES = ("unit_price", "price_unit", "price")
_LLM_USAGE = Struct(
    "LLMUsage",
    [  # llm.go:267: *int/*string/*float64 `required` = present and non-null
        *(
            f
            for side in ("prompt", "completion")
            for f in [
                F(f"{side}_tokens", Ptr("int"), "required"),
                *(F(f"{side}_{p}", "dec", "required") for p in _PRICES),
            ]
        ),
        F("total_tokens", Ptr("int"), "required"),
        F("total_price", "dec", "required"),
        F("currency", Ptr("str"), "required"),
        F("latency", Ptr("float"), "required"),
    ],
)
_DELTA = Struct(
    "LLMResultChunkDelta",
    [  # llm.go:282
        F("index", Ptr("int"), "required"),
        F("message", _PROMPT_MESSAGE, "required"),
        F("usage", Ptr(_LLM_USAGE), "omitempty"),
        F("finish_reason", Ptr("str"), "omitempty"),
    ],
)
_CHUNK_HEAD = [
    F("model", "str", "required"),
    F("system_fingerprint", "str", "omitempty"),
    F("delta", _DELTA, "required"),
]
LLM_CHUNK = Struct("LLMResultChunk", _CHUNK_HEAD)  # llm.go:229
LLM_STRUCTURED_CHUNK = Struct(
    "LLMResultChunkWithStructuredOutput",  # llm.go:239, embeds LLMStructuredOutput
    [*_CHUNK_HEAD, F("structured_output", "map", "omitempty")],
)
TTS_RESULT = Struct("TTSResult", [F("result", "str"), F("mime_type", "str", omit=True)])  # tts.go


def _embedding(name: str) -> Struct:  # text_embedding.go:15 / multimodal.go:31 (identical shapes)
    usage = Struct(
        "EmbeddingUsage",
        [
            F("tokens", Ptr("int"), "required"),
            F("total_tokens", Ptr("int"), "required"),
            *(F(j, "dec", "required") for j in ("unit_price", "price_unit", "total_price")),
            F("currency", Ptr("str"), "required"),
            F("latency", Ptr("float"), "required"),
        ],
    )
    return Struct(
        name,
        [
            F("model", "str", "required"),
            F("embeddings", Slice(Slice("float")), "required,dive"),
            F("usage", usage, "required"),
        ],
    )


def _rerank(name: str, doc: str) -> Struct:  # rerank.go / multimodal.go:20-29 (identical shapes)
    d = Struct(
        doc,
        [F("index", Ptr("int"), "required"), F("text", Ptr("str"), "required"), F("score", Ptr("float"), "required")],
    )
    return Struct(name, [F("model", "str", "required"), F("docs", Slice(d), "required,dive")])


UNARY_TYPES: dict[str, Struct] = {
    "text_embedding": _embedding("TextEmbeddingResult"),
    "multimodal_embedding": _embedding("MultimodalEmbeddingResult"),
    "rerank": _rerank("RerankResult", "RerankDocument"),
    "multimodal_rerank": _rerank("MultimodalRerankResult", "MultimodalRerankDocument"),
    # No validate tags at all (speech2text.go, moderation.go, dify_invocation/types.go:275): only decoding
    # can fail, e.g. {"result": "true"} for moderation. A missing key silently becomes ""/false.
    "speech2text": Struct("Speech2TextResult", [F("result", "str")]),
    "moderation": Struct("ModerationResult", [F("result", "bool")]),
    "system_summary": Struct("InvokeSummaryResponse", [F("summary", "str")], pkg="dify_invocation"),
}
STREAM_TYPES: dict[str, Struct] = {"llm": LLM_CHUNK, "llm_structured_output": LLM_STRUCTURED_CHUNK, "tts": TTS_RESULT}


# ------------------------------------------------------------------------ go-playground/validator v10.30.1
_ROLES = {"system", "user", "assistant", "tool"}  # isPromptMessageRole, llm.go:43 ("developer" fails)
_CONTENT_TYPES = {"text", "image", "audio", "video", "document"}  # isPromptMessageContentType, llm.go:92


def _content_ok(v: Any) -> bool:  # isPromptMessageContent, llm.go:64: a string, or items that each validate
    return isinstance(v, str) or all(it["type"] in _CONTENT_TYPES for it in v)


def _check(t: Struct, v: dict[str, Any], ns: str, out: list[str]) -> None:
    """validateStruct/traverseField (validator.go): tags run in order, the first failing one is reported."""
    for f in t.fields:
        val, fns = v[f.js], f"{ns}.{f.go}"
        fail = f"Key: '{fns}' Error:Field validation for '{f.go}' failed on the '%s' tag"
        ft = f.t.elem if isinstance(f.t, Ptr) else f.t
        if isinstance(f.t, Struct) or f.t == "dec":
            # `required` on a non-pointer struct is skipped (validator.go:178, requiredStructEnabled is off
            # because pkg/validators/validators.go calls validator.New() with no options): so decimals are
            # never required, and nested structs (Delta, Message, embedding Usage) are always descended into.
            if isinstance(f.t, Struct):
                _check(f.t, val, fns, out)
            continue
        nillable = isinstance(f.t, Ptr | Slice) or f.t in ("any", "map", "content")
        # hasValue (baked_in.go:1816): nillable -> non-nil (a pointer to 0 or "" passes); else non-zero.
        empty = val is None if nillable else val in ("", 0, False)
        if "omitempty" in f.tags and empty:
            continue
        if "required" in f.tags and empty:
            out.append(fail % "required")
            continue
        if "prompt_message_role" in f.tags and val not in _ROLES:
            out.append(fail % "prompt_message_role")
        elif "prompt_message_content" in f.tags and not _content_ok(val):
            out.append(fail % "prompt_message_content")
        elif isinstance(ft, Struct) and val is not None:
            _check(ft, val, fns, out)
        elif "dive" in f.tags and isinstance(f.t, Slice) and isinstance(f.t.elem, Struct):
            for i, item in enumerate(val or []):  # dive over nil is a no-op: tool_calls null passes
                _check(f.t.elem, item, f"{fns}[{i}]", out)


# ------------------------------------------------------------------------------------ decode + re-emit
def _type(kind: str) -> Struct:
    return STREAM_TYPES.get(kind) or UNARY_TYPES["system_summary" if kind == "summary" else kind]


def _violations(t: Struct, obj: Any) -> tuple[Any, list[str]]:
    """Decode `obj` (the envelope's `data`: a JSON text, or Python values re-serialised) as Go would."""
    if obj is None:
        return None, ["data is nil"]
    try:
        value = _parse_whole(
            obj.decode("utf-8", "replace")
            if isinstance(obj, bytes)
            else obj
            if isinstance(obj, str)
            else json.dumps(obj, ensure_ascii=False)
        )
        st = _St()
        data = _dec(t, value, _zero(t), t.name, ["data"], st)
    except (ValueError, TypeError) as e:  # not JSON at all / NaN / not serialisable
        return None, [f"not decodable as JSON: {e}"]
    except _Abort as e:
        return None, [*st.errors, str(e)]
    if st.errors:  # UnmarshalJsonBytes returns before validating (parser/json.go:16-31)
        return None, st.errors
    out: list[str] = []
    _check(t, data, t.name, out)
    return data, out


def validate(kind: str, obj: Any) -> list[str]:
    """Why the daemon would refuse this `data` of a reply of `kind` (dropped frame / unary error); [] = accepted."""
    return _violations(_type(kind), obj)[1]


validate_llm_chunk = partial(validate, "llm")
validate_llm_structured_chunk = partial(validate, "llm_structured_output")
validate_tts_chunk = partial(validate, "tts")  # tts.go: no validate tags, only JSON types can fail
validate_text_embedding_result = partial(validate, "text_embedding")
validate_multimodal_embedding_result = partial(validate, "multimodal_embedding")
validate_rerank_result = partial(validate, "rerank")
validate_multimodal_rerank_result = partial(validate, "multimodal_rerank")
validate_speech2text_result = partial(validate, "speech2text")  # no validate tags either, see UNARY_TYPES
validate_moderation_result = partial(validate, "moderation")
validate_summary_result = partial(validate, "system_summary")


def _emit(t: GoType, v: Any) -> Any:
    """encoding/json Marshal of a decoded value: struct field order, decimals as strings, nil -> null."""
    if isinstance(t, Ptr | Slice):
        if v is None:
            return None
        return _emit(t.elem, v) if isinstance(t, Ptr) else [_emit(t.elem, x) for x in v]
    if isinstance(t, Struct):
        return {
            f.js: _emit(f.t, v[f.js]) for f in t.fields if not (f.omit and (v[f.js] is _ABSENT or v[f.js] == ""))
        }  # omitempty: RawMessage len 0, ""
    if t == "dec":
        return decimal_string(*v)
    if t == "raw":
        return _plain(v, False)  # re-emitted verbatim (json.RawMessage)
    if t == "content" and isinstance(v, list):
        return [_emit(_CONTENT_ITEM, x) for x in v]  # every item key re-emitted, "" when unset
    return v


def _emit_top(kind: str, t: Struct, data: Any) -> dict[str, Any]:
    out: dict[str, Any] = _emit(t, data)
    if kind == "llm":
        out["prompt_messages"] = []  # LLMResultChunk.MarshalJSON, llm.go:255 (not the structured type)
    return out


def reemit(kind: str, obj: Any) -> dict[str, Any]:
    """What the daemon forwards to the plugin for an accepted `data` of this kind; ValueError if not accepted."""
    t = _type(kind)
    data, problems = _violations(t, obj)
    if problems:
        raise ValueError(f"the daemon would not accept this {kind} data: {problems}")
    return _emit_top(kind, t, data)


def reemit_llm_chunk(obj: Any, structured_output: bool = False) -> dict[str, Any]:
    """Keys model, system_fingerprint (null -> ""), delta{index, message{role, content, name, tool_calls,
    tool_call_id[, opaque_body]}, usage (12 keys, decimals as strings, "0" if missing), finish_reason},
    then prompt_messages [] - or structured_output instead of prompt_messages for the structured variant."""
    return reemit("llm_structured_output" if structured_output else "llm", obj)


# ---------------------------------------------------------------------------------------- reply readers
def _envelope(t: Struct) -> Struct:  # calldify/types.go:38 BaseBackwardsInvocationResponse[T]
    where = {"model_entities": "pkg/entities", "dify_invocation": "internal/core"}[t.pkg]
    full = f"BaseBackwardsInvocationResponse[github.com/langgenius/dify-plugin-daemon/{where}/{t.pkg}.{t.name}]"
    return Struct(full, [F("data", Ptr(t)), F("error", "str")], pkg="calldify")


def _decode_envelope(t: Struct, value: Any) -> tuple[dict[str, Any] | None, list[str]]:
    env, st = _envelope(t), _St()
    try:
        decoded = _dec(env, value, _zero(env), "", [], st)
    except _Abort as e:  # an UnmarshalJSON error wins over earlier saved type errors
        return None, [str(e)]
    return (None, st.errors) if st.errors else (decoded, [])


@dataclass
class DaemonStreamOutcome:
    chunks: list[dict[str, Any]]  # what the daemon forwards to the plugin, re-serialised (see reemit)
    error: str | None  # the daemon's error text (the plugin sees "read llm model failed: " + this), or None
    dropped: list[tuple[bytes, str]]  # (frame payload, why) for frames silently skipped ("stream data not match")


def read_stream_reply(status: int, body: bytes, kind: str, max_size: int = DEFAULT_MAX_FRAME) -> DaemonStreamOutcome:
    """Replay a whole streamed reply (llm, llm_structured_output, tts) through the daemon's reader."""
    t = STREAM_TYPES[kind]
    if status != 200:  # http_warpper.go:84-88: exactly 200, body echoed raw (here decoded for display)
        msg = f"request failed with status code: {status} and respond with: {body.decode('utf-8', 'replace')}"
        return DaemonStreamOutcome([], msg, [])
    frames, _, frame_err = _scan(body, max_size, eof=True)
    chunks: list[dict[str, Any]] = []
    dropped: list[tuple[bytes, str]] = []
    for payload in frames:
        # processData (http_warpper.go:114): json.Unmarshal + validate the *whole envelope*, data included,
        # before StreamResponse (calldify/http_request.go:94) ever looks at `error`; failures are skipped.
        try:
            value = _parse_whole(payload.decode("utf-8", "replace"))
        except ValueError as e:
            dropped.append((payload, f"invalid JSON: {e}"))
            continue
        env, problems = _decode_envelope(t, value)
        if env is not None and env["data"] is not None:
            _check(t, env["data"], t.name, problems)
        if env is None or problems:
            dropped.append((payload, "; ".join(problems)))
            continue
        if env["error"] != "":
            return DaemonStreamOutcome(chunks, f"request failed: {env['error']}", dropped)
        if env["data"] is None:
            return DaemonStreamOutcome(chunks, "data is nil", dropped)
        chunks.append(_emit_top(kind, t, env["data"]))
    return DaemonStreamOutcome(chunks, frame_err, dropped)  # a framing error arrives after the queued chunks


def _syntax_error(text: str, e: ValueError) -> str:
    """Approximate wording of Go's json.Decoder syntax errors (best effort: only 'EOF' cases are exact)."""
    if isinstance(e, json.JSONDecodeError):
        rest = text[e.pos :]  # the body ends inside a literal or number: Go's scanner hits EOF first
        if (
            e.msg.startswith("Unterminated string")
            or any(w.startswith(rest) for w in ("true", "false", "null"))
            or re.fullmatch(r"-?([0-9]+(\.[0-9]*)?([eE][+-]?[0-9]*)?)?", rest)
        ):
            return "unexpected EOF"
        return f"invalid character {text[e.pos]!r} looking for beginning of value ({e.msg})"
    return str(e)


def read_unary_reply(body: bytes, kind: str) -> tuple[dict[str, Any] | None, str | None]:
    """Replay a single-JSON reply; returns (data as the plugin receives it, None) or (None, daemon error)."""
    t = _type(kind)
    text = body.decode("utf-8", "replace")
    idx = len(text) - len(text.lstrip(" \t\n\r"))  # Go's JSON whitespace set
    if idx == len(text):
        return None, "EOF"  # json.Decoder on an empty body
    try:
        value, _ = _DECODER.raw_decode(text, idx)  # Decoder.Decode: first value only, the rest is never read
    except RecursionError:
        return None, "exceeded max depth"
    except ValueError as e:
        return None, _syntax_error(text, e)
    env, problems = _decode_envelope(t, value)
    if env is None:  # RequestAndParse fails before `error` is looked at: even an error reply is lost
        return None, problems[0]
    if env["error"] != "":  # calldify/http_request.go:33 - checked before data validation
        return None, f"request failed: {env['error']}"
    if env["data"] is None:
        return None, "data is nil"
    out: list[str] = []
    _check(t, env["data"], t.name, out)
    if out:  # ValidationErrors.Error(): one line per field error (errors.go:42)
        return None, "validate request failed: " + "\n".join(out)
    return _emit_top(kind, t, env["data"]), None
