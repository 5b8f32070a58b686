"""The Grafana dashboard and the Prometheus alert rules against what a running gateway exports.

A gateway serves an LLM stream, an embedding call (Redis-backed cache, so both cache tiers
and the Redis breaker appear) and an unrouted call, then its ``/metrics`` is scraped. Every
metric a query names must be exported under that exact name (counters as ``<family>_total``,
histograms as ``<family>_bucket``/``_sum``/``_count``), every label a query matches or
groups by must be on that metric, and a value it matches exactly must be one the gateway
produces. The PromQL is read by a small scanner that knows selectors, ``by``/``without``
clauses and function calls; it is not a full parser.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.adapters.litellm_loader import load_litellm_sync
from gateway.config import MODEL_TYPES
from gateway.request_metrics import OUTCOMES
from tests.fakes.upstream import Chat, Embeddings, FakeUpstream
from tests.support.client import invoke_body, llm_request, post_stream, post_unary
from tests.support.server import GatewayServer, gateway_config

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dify-gateway.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULES_README = ROOT / "deploy" / "prometheus" / "README.md"

# Labels Prometheus itself puts on every scraped series.
SCRAPE_LABELS = frozenset({"job", "instance"})
# Label values the gateway produces that one scrape need not show.
KNOWN_VALUES: dict[str, set[str]] = {
    "outcome": set(OUTCOMES),
    "type": {*MODEL_TYPES, "llm-structured-output", "summary", "forward", "other"},
    "state": {"closed", "open", "half-open"},
}
GRAFANA_VARIABLES = frozenset({"__rate_interval", "__interval", "__range"})
SEVERITIES = frozenset({"critical", "warning", "info"})
DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
# How the text format names the series of a counter or histogram family.
_SUFFIXES = (("_total", "counter"), ("_bucket", "histogram"), ("_sum", "histogram"), ("_count", "histogram"))


# --- what the gateway exports ----------------------------------------------------------


@dataclass(frozen=True)
class Series:
    labels: frozenset[str]
    counter: bool  # a counter's or histogram's monotonic series: what rate() and increase() take


@dataclass
class Exported:
    families: dict[str, tuple[str, frozenset[str]]]  # family name -> (type, label names)
    values: dict[str, set[str]]  # label name -> every value seen, plus KNOWN_VALUES
    samples: list[tuple[str, dict[str, str]]]

    @classmethod
    def parse(cls, text: str) -> Exported:
        families: dict[str, tuple[str, frozenset[str]]] = {}
        values: dict[str, set[str]] = defaultdict(set)
        samples: list[tuple[str, dict[str, str]]] = []
        for family in text_string_to_metric_families(text):
            names: set[str] = set()
            for sample in family.samples:
                samples.append((sample.name, sample.labels))
                names.update(sample.labels)
                for label, value in sample.labels.items():
                    values[label].add(value)
            families[family.name] = (family.type, frozenset(names - {"le", "quantile"}))
        for label, known in KNOWN_VALUES.items():
            values[label] |= known
        return cls(families, dict(values), samples)

    def series(self, name: str) -> Series | None:
        """The series a PromQL selector ``name`` finds, or None when the gateway exports none."""
        kind, labels = self.families.get(name, ("", frozenset()))
        if kind in ("gauge", "untyped"):
            return Series(labels, counter=False)
        for suffix, family_kind in _SUFFIXES:
            if name.endswith(suffix):
                kind, labels = self.families.get(name.removesuffix(suffix), ("", frozenset()))
                if kind == family_kind:
                    return Series((labels | {"le"}) if suffix == "_bucket" else labels, counter=True)
        return None

    def spelling(self, name: str) -> str:
        """How the series of the family ``name`` is meant to be written, if there is one."""
        base = next((name.removesuffix(s) for s, _ in _SUFFIXES if name.endswith(s)), name)
        kind, _ = self.families.get(base, ("", frozenset()))
        names = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(kind, [""])
        return f" ({base} is a {kind}: {', '.join(base + n for n in names)})" if kind else ""


# --- reading PromQL ----------------------------------------------------------------------

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^{}]*\}|\[[^\]]*\]|[A-Za-z_:][\w:]*|\d+(?:\.\d+)?(?:e[+-]?\d+)?|\S')
_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_IDENT = re.compile(r"[A-Za-z_:][\w:]*")
_LITERALS = re.compile(r"[\w.-]+(\|[\w.-]+)*")
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2"}) | _GROUPING
_RATES = frozenset({"rate", "irate", "increase"})


@dataclass(frozen=True)
class Selector:
    index: int  # token position
    name: str
    matchers: list[tuple[str, str, str]]  # (label, operator, value)
    functions: list[str]  # the calls around it, innermost last ("" for plain parentheses)
    ranged: bool  # name[...]


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    groupings: list[tuple[str, list[str], range]] = field(default_factory=list)  # (keyword, labels, tokens covered)
    problems: list[str] = field(default_factory=list)


def read_query(expr: str) -> Query:
    """The selectors and ``by``/``without``/``on``/``ignoring`` clauses of a PromQL expression."""
    query = Query()
    tokens: list[str] = _TOKEN.findall(expr)
    partner: dict[int, int] = {}
    opened: list[int] = []
    for i, token in enumerate(tokens):
        if token == "(":
            opened.append(i)
        elif token == ")":
            if not opened:
                query.problems.append(f"unbalanced ')' in {expr!r}")
                return query
            partner[i] = opened.pop()
            partner[partner[i]] = i
    if opened:
        query.problems.append(f"unbalanced '(' in {expr!r}")
        return query

    def at(i: int) -> str:
        return tokens[i] if 0 <= i < len(tokens) else ""

    calls: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in _GROUPING and at(i + 1) == "(":
            close = partner[i + 1]
            labels = [t for t in tokens[i + 2 : close] if t != ","]
            if token in ("by", "without") and at(close + 1) == "(":
                covers = range(close + 1, partner[close + 1] + 1)  # sum by (x) (argument)
            elif token in ("by", "without") and at(i - 1) == ")":
                covers = range(partner[i - 1], i)  # sum (argument) by (x)
            else:
                covers = range(len(tokens))  # vector matching: both sides
            query.groupings.append((token, labels, covers))
            i = close + 1
            continue
        if token == "(":
            calls.append(at(i - 1) if _IDENT.fullmatch(at(i - 1)) else "")
        elif token == ")":
            calls.pop()
        elif token.startswith("{"):
            query.problems.append(f"a selector without a metric name: {token}")
        elif _IDENT.fullmatch(token) and token not in _KEYWORDS and at(i + 1) != "(" and at(i + 1) not in _GROUPING:
            matchers: list[tuple[str, str, str]] = []
            end = i + 1
            if at(end).startswith("{"):
                body = at(end)[1:-1]
                found = list(_MATCHER.finditer(body))
                if "".join(m.group(0) for m in found).strip() != body.strip():
                    query.problems.append(f"{token}: cannot read the matchers {at(end)}")
                matchers = [(m.group(1), m.group(2), m.group(3)) for m in found]
                end += 1
            query.selectors.append(Selector(i, token, matchers, list(calls), at(end).startswith("[")))
            i = end
            continue
        i += 1
    return query


def check_expr(expr: str, exported: Exported) -> list[str]:
    """Problems of one PromQL expression against the scrape (empty when it is sound)."""
    query = read_query(expr)
    problems = list(query.problems)
    resolved: dict[int, Series] = {}
    for selector in query.selectors:
        name = selector.name
        series = exported.series(name)
        if series is None:
            problems.append(f"{name} is not exported{exported.spelling(name)}")
            continue
        resolved[selector.index] = series
        for label, op, value in selector.matchers:
            if label not in series.labels | SCRAPE_LABELS:
                problems.append(f"{name} has no label {label!r} (it has {sorted(series.labels)})")
            elif label in exported.values and "$" not in value:
                literal = op in ("=", "!=") or _LITERALS.fullmatch(value)
                unknown = sorted(set(value.split("|") if op in ("=~", "!~") else [value]) - exported.values[label])
                if literal and unknown:
                    problems.append(f"{name}: {label} is never {unknown} (known: {sorted(exported.values[label])})")
        innermost = selector.functions[-1] if selector.functions else ""
        if selector.ranged and innermost in _RATES and not series.counter:
            problems.append(f"{innermost}() over {name}, which is not a counter")
        if name.endswith("_bucket") and "histogram_quantile" not in selector.functions:
            problems.append(f"{name} outside histogram_quantile()")
    for keyword, labels, covers in query.groupings:
        inside = [(s.name, resolved[s.index]) for s in query.selectors if s.index in covers and s.index in resolved]
        for label in labels:
            for name, series in inside:
                if label not in series.labels | SCRAPE_LABELS:
                    problems.append(f"{keyword} ({label}) over {name}, which has no label {label!r}")
        buckets = any(name.endswith("_bucket") for name, _ in inside)
        if buckets and keyword in ("by", "without") and (keyword == "by") != ("le" in labels):
            problems.append(f"{keyword} ({', '.join(labels)}) over histogram buckets drops 'le'")
    return problems


# --- the artifacts -----------------------------------------------------------------------


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but rows, those inside collapsed rows included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every label_values() variable."""
    queries = [(f"panel {p['title']!r}", t["expr"]) for p in dashboard_panels(dashboard) for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            q = variable["query"]
            text = q["query"] if isinstance(q, dict) else q
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
            assert m, f"variable {variable['name']}: not a label_values() query: {text}"
            # The label must be on the metric: check it as a grouping over the selector.
            queries.append((f"variable ${variable['name']}", f"count by ({m.group(2)}) ({m.group(1)})"))
    return queries


def rule_queries(rules: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"alert {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]


def problems_of(queries: list[tuple[str, str]], exported: Exported) -> list[str]:
    return [f"{where}: {problem}" for where, expr in queries for problem in check_expr(expr, exported)]


@pytest.fixture(scope="module")
def exported(upstream: FakeUpstream, redis_url: str) -> Exported:
    load_litellm_sync()  # its import takes seconds; keep it out of the gateway's first request
    upstream.reset()
    upstream.script("chat-model", Chat(["Hello", " there"]))
    upstream.script("embedding-model", Embeddings())
    target = {"model": "openai/{model}", "api_base": upstream.base_url, "api_key": "sk-x"}
    routes = [
        {"name": "chat", "match": {"type": "llm"}, "targets": [target]},
        {"name": "embeddings", "match": {"type": "text-embedding"}, "targets": [target]},
    ]
    prefix = f"dgw-observability-{uuid.uuid4().hex[:8]}:"
    try:
        with GatewayServer(gateway_config(routes, cache={"redis_url": redis_url, "key_prefix": prefix})) as gateway:
            stream = post_stream(gateway.url, "/inner/api/invoke/llm", llm_request("chat-model"))
            assert (stream.status, stream.outcome.error, stream.text) == (200, None, "Hello there")
            embedding = invoke_body("text_embedding", "embedding-model", texts=["one", "two"], input_type="document")
            post_unary(gateway.url, "text-embedding", embedding).ok()
            unrouted = invoke_body("rerank", "rerank-model", query="q", docs=["d"], score_threshold=None, top_n=None)
            assert "no route" in (post_unary(gateway.url, "rerank", unrouted).error or "")
            text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    finally:
        upstream.script("chat-model")  # no steps: the scripts go, for the tests after these
        upstream.script("embedding-model")
        client = redis.Redis.from_url(redis_url)
        try:
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
        finally:
            client.close()
    return Exported.parse(text)


def test_the_scrape_shows_the_traffic_driven(exported: Exported) -> None:
    requests = {
        (s["type"], s["route"], s["outcome"]) for name, s in exported.samples if name == "dify_gateway_requests_total"
    }
    assert {("llm", "chat", "ok"), ("text-embedding", "embeddings", "ok"), ("rerank", "none", "no_route")} <= requests
    assert exported.values["store"] >= {"memory", "redis"}
    assert exported.series("dify_gateway_embedding_cache_breaker_state") is not None


def test_dashboard_queries_use_exported_metrics_and_labels(exported: Exported) -> None:
    problems = problems_of(dashboard_queries(json.loads(DASHBOARD.read_text())), exported)
    assert problems == [], "\n".join(problems)


def test_alert_rules_use_exported_metrics_and_labels(exported: Exported) -> None:
    problems = problems_of(rule_queries(yaml.safe_load(RULES.read_text())), exported)
    assert problems == [], "\n".join(problems)


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    for name in ("type", "route"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"]["uid"] == "${datasource}"
    panels = dashboard_panels(dashboard)
    rows = [p for p in dashboard["panels"] if p.get("type") == "row"]
    ids = [p["id"] for p in rows + panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        where = f"panel {panel.get('title')!r}"
        assert panel.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel.get("targets"), f"{where} has no target"
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), where
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], where
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], where
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            assert used <= set(variables) | GRAFANA_VARIABLES, f"{where}: undefined variables {used - set(variables)}"


def test_alert_rule_file_is_well_formed() -> None:
    rules = yaml.safe_load(RULES.read_text())
    assert set(rules) == {"groups"} and rules["groups"]
    names: list[str] = []
    for group in rules["groups"]:
        assert isinstance(group["name"], str) and group["rules"], group.get("name")
        for rule in group["rules"]:
            names.append(rule["alert"])
            where = f"alert {rule['alert']}"
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]), where
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, where
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), where
            assert DURATION.fullmatch(str(rule["for"])), f"{where}: for: {rule['for']!r}"
            assert rule["labels"]["severity"] in SEVERITIES, where
            annotations = rule["annotations"]
            assert annotations["summary"].strip() and annotations["description"].strip(), where
            # Labels an annotation prints must survive the expression's aggregation.
            kept = {label for _, labels, _ in read_query(rule["expr"]).groupings for label in labels}
            printed = set(re.findall(r"\$labels\.(\w+)", " ".join(annotations.values())))
            assert printed <= kept, f"{where}: annotations print {sorted(printed - kept)}, which the expr drops"
    assert len(names) == len(set(names)), "alert names repeat"
    readme = RULES_README.read_text()
    assert [n for n in names if n not in readme] == [], "alerts the README does not explain"


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        pytest.param("sum(rate(dify_gateway_request_total[5m]))", "not exported", id="misspelled-name"),
        pytest.param("sum(rate(dify_gatway_requests_total[5m]))", "not exported", id="misspelled-prefix"),
        pytest.param("sum(rate(dify_gateway_requests[5m]))", "is a counter", id="counter-without-total"),
        pytest.param("sum(dify_gateway_in_flight_total)", "is a gauge", id="gauge-with-total"),
        pytest.param("rate(dify_gateway_overhead_seconds[5m])", "is a histogram", id="histogram-family-name"),
        pytest.param('sum(rate(dify_gateway_overhead_seconds_count{route="x"}[5m]))', "no label", id="matcher-label"),
        pytest.param("sum by (route) (rate(dify_gateway_overhead_seconds_count[5m]))", "no label", id="by-label"),
        pytest.param("sum(rate(dify_gateway_retries_total[5m])) by (outcome)", "no label", id="trailing-by-label"),
        pytest.param('sum(rate(dify_gateway_requests_total{outcome="upstream_errors"}[5m]))', "is never", id="value"),
        pytest.param('dify_gateway_target_breaker_state{state=~"open|halfopen"}', "is never", id="value-in-regex"),
        pytest.param("rate(dify_gateway_in_flight[5m])", "not a counter", id="rate-of-gauge"),
        pytest.param(
            "histogram_quantile(0.99, sum by (type) (rate(dify_gateway_overhead_seconds_bucket[5m])))",
            "drops 'le'",
            id="quantile-without-le",
        ),
        pytest.param("sum(rate(dify_gateway_overhead_seconds_bucket[5m]))", "outside histogram_quantile", id="buckets"),
        pytest.param("sum(rate(dify_gateway_requests_total[5m])", "unbalanced", id="unbalanced"),
    ],
)
def test_the_check_rejects_broken_queries(exported: Exported, expr: str, problem: str) -> None:
    problems = check_expr(expr, exported)
    assert problems and all(problem in p for p in problems), problems


def test_the_check_accepts_other_sound_forms(exported: Exported) -> None:
    trailing = "histogram_quantile(0.9, sum(rate(dify_gateway_overhead_seconds_bucket[5m])) by (le, type))"
    matching = (
        'sum by (route) (rate(dify_gateway_requests_total{outcome=~"upstream_error|error"}[5m]))'
        " / on (route) group_left sum by (route) (rate(dify_gateway_requests_total[5m]))"
    )
    assert check_expr(trailing, exported) == check_expr(matching, exported) == []


def test_a_misspelled_metric_in_the_dashboard_fails_the_check(exported: Exported) -> None:
    text = DASHBOARD.read_text().replace("dify_gateway_time_to_first_byte_seconds", "dify_gateway_time_to_first_token")
    problems = problems_of(dashboard_queries(json.loads(text)), exported)
    assert problems and all("dify_gateway_time_to_first_token_bucket is not exported" in p for p in problems)
