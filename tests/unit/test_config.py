from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return str(path)


def test_no_file_gives_embedded_defaults_with_key_from_env() -> None:
    config = load_config(None, env={"DIFY_INNER_API_KEY": "k1"})
    assert config.source == "<embedded defaults>"
    served = {t: r.targets[0].model for r in config.routes for t in r.match.types}
    assert served == {
        "llm": "local/smollm2-135m-instruct",
        "text-embedding": "local/multilingual-e5-small",
        "multimodal-embedding": "local/multilingual-e5-small",
        "rerank": "local/multilingual-e5-small",
        "multimodal-rerank": "local/multilingual-e5-small",
        "tts": "local/espeak-ng",
        "speech2text": "local/whisper-tiny.en",
        "moderation": "local/moderation-rules",
    }
    assert config.server.port == 8080
    assert config.dify.inner_api_key is not None
    assert config.dify.inner_api_key.get_secret_value() == "k1"


def test_in_front_of_dify_the_default_routes_leave_llm_calls_to_dify() -> None:
    def types(raw: dict[str, object]) -> set[str]:
        return {t for r in parse_config(raw, "test", env={}).routes for t in r.match.types}

    assert "llm" in types({})
    assert "llm" not in types({"dify": {"api_url": "http://api:5001"}})
    assert "text-embedding" in types({"dify": {"api_url": "http://api:5001"}})
    assert "llm" in types({"dify": {"api_url": "http://api:5001", "passthrough": False}})


def test_a_file_without_routes_gets_the_defaults_and_with_routes_only_its_own(tmp_path: Path) -> None:
    assert len(load_config(write(tmp_path, "server: {port: 9000}\n"), env={}).routes) == 8
    assert load_config(write(tmp_path, "routes: []\n"), env={}).routes == []


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("{match: {type: tts}, targets: [{model: local/multilingual-e5-small}]}", "cannot serve tts"),
        ("{match: {type: llm}, targets: [{model: local/espeak-ng}]}", "cannot serve llm"),
        ("{match: {type: rerank}, targets: [{model: local/nope}]}", "cannot serve rerank"),
        ("{match: {type: rerank}, targets: [{model: tei/bge}]}", "needs api_base"),
        ("{match: {type: rerank}, targets: [{model: cohere/r}], cache: {}}", "cache is for llm routes"),
        ("{match: {type: llm}, targets: [{model: openai/m}], cache: {ttl_s: 0}}", "ttl_s"),
        ("{match: {type: llm}, targets: [{model: openai/m}], cache: {per_user: true}}", "per_user"),
    ],
)
def test_targets_that_cannot_serve_their_route_are_refused(tmp_path: Path, route: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, f"routes: [{route}]\n"), env={})


def test_summary_model_must_be_an_llm(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the summary needs an LLM; the embedded one is local/smollm2-135m-instruct"):
        load_config(write(tmp_path, "summary_model: {model: local/espeak-ng}\n"), env={})
    config = load_config(write(tmp_path, "summary_model: {model: local/smollm2-135m-instruct}\n"), env={})
    assert config.summary_model is not None


def test_path_comes_from_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: 9999}\n")
    assert load_config(None, env={"DIFY_GATEWAY_CONFIG": path}).server.port == 9999


def test_environment_and_file_references(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("sk-from-file\n")
    path = write(
        tmp_path,
        f"""
dify: {{inner_api_key: os.environ/INNER}}
routes:
  - match: {{type: llm}}
    targets:
      - model: openai/{{model}}
        api_key: file:{secret}
        api_base: "http://${{HOST}}:${{PORT:-8000}}/v1"
""",
    )
    config = load_config(path, env={"INNER": "inner-secret", "HOST": "vllm"})
    target = config.routes[0].targets[0]
    assert target.api_key is not None and target.api_key.get_secret_value() == "sk-from-file"
    assert target.api_base == "http://vllm:8000/v1"
    assert sorted(config.secrets()) == ["inner-secret", "sk-from-file"]
    assert "sk-from-file" not in repr(config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("routes:\n  - match: {type: llm}\n    targets: [{model: m, weight: 0}]\n", "routes[0].targets[0].weight"),
        ("routes:\n  - match: {type: llm}\n    targets: [{model: m, api_bse: x}]\n", "routes[0].targets[0].api_bse"),
        ("routes:\n  - match: {type: chat}\n    targets: [{model: m}]\n", "routes[0].match.type"),
        ("routes:\n  - match: {type: llm}\n    targets: []\n", "routes[0].targets"),
        ("serverr: {port: 1}\n", "serverr"),
        ("server: {port: 70000}\n", "server.port"),
        ("dify: {inner_api_key: os.environ/NOPE}\n", "dify.inner_api_key: environment variable NOPE is not set"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("routes: [\n", "not valid YAML (line"),
        (
            "routes:\n  - {name: a, match: {type: llm}, targets: [{model: m}]}\n"
            "  - {name: a, match: {type: llm}, targets: [{model: m}]}\n",
            "route names must be unique, repeated: a",
        ),
    ],
)
def test_invalid_configuration_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(path)
    assert expected in message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(str(tmp_path / "absent.yaml"), env={})


def test_unreadable_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dify.inner_api_key: cannot read"):
        parse_config({"dify": {"inner_api_key": f"file:{tmp_path}/none"}}, "x.yaml", env={})


@pytest.mark.parametrize(
    "text",
    [
        "dify: {inner_api_key: ''}\n",
        "dify: {inner_api_key: k, api_key: '  '}\n",
        "serverless: {enabled: true, default_tenant: t, api_key: ''}\n",
        "dify: {inner_api_key: '${EMPTY}'}\n",
    ],
)
def test_empty_keys_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="empty"):
        load_config(write(tmp_path, text), env={"EMPTY": ""})


def test_preload_list_names_embedded_models(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "server: {preload_local_models: [local/whisper-tiny.en]}\n"), env={})
    assert config.server.preload_local_models == ["local/whisper-tiny.en"]
    with pytest.raises(ConfigError, match="'local/whisper-large' is not an embedded model"):
        load_config(write(tmp_path, "server: {preload_local_models: [local/whisper-large]}\n"), env={})


@pytest.mark.parametrize(
    ("target", "types", "expected"),
    [
        ("{model: anthropc/claude-3-5-haiku}", "llm", "litellm does not know the provider prefix 'anthropc'"),
        ("{model: tei/bge, api_base: 'http://tei'}", "llm", "backend tei cannot serve llm"),
        ("{model: local/multilingual-e5-small, backend: local}", "llm", "cannot serve llm"),
        ("{model: openai/tts-1, backend: openai}", "tts", "backend openai cannot serve tts"),
        ("{model: hosted_vllm/m, backend: openai}", "llm", "backend openai needs api_base"),
        ("{model: hosted_vllm/bge, backend: rerank}", "rerank", "native rerank client needs api_base"),
        ("{model: tei/bge, backend: tei}", "rerank", "needs api_base"),
        ("{model: local/espeak-ng, backend: litellm}", "tts", "litellm does not know the provider prefix 'local'"),
        ("{model: openai/m, litellm_params: {custom_llm_provider: nope}}", "llm", "does not know the provider 'nope'"),
        ("{model: openai/m, backend: openai, native: true}", "llm", "set backend or native, not both"),
    ],
)
def test_backend_problems_name_the_route_and_the_target(tmp_path: Path, target: str, types: str, expected: str) -> None:
    text = f"routes: [{{name: chat, match: {{type: {types}}}, targets: [{target}]}}]\n"
    with pytest.raises(ConfigError, match=expected) as raised:
        load_config(write(tmp_path, text), env={})
    if "not both" not in expected:  # a target's own key conflict is named by its location
        assert "route 'chat', target '" in str(raised.value)
    assert "routes[0]" in str(raised.value)


@pytest.mark.parametrize(
    "target",
    [
        "{model: gpt-4o-mini}",  # litellm picks the provider from the name
        "{model: '{provider}/{model}'}",  # known only per request
        "{model: meta-llama/Llama-3-70b, api_base: 'https://api.groq.com/openai/v1'}",  # inferred from the address
        "{model: m/x, litellm_params: {custom_llm_provider: openai}}",
        "{model: hosted_vllm/m}",  # derived native without api_base fails at the call, as before
        "{model: aihubmix/m}",  # a provider of litellm's providers.json
        "{model: hosted_vllm/m, backend: litellm}",
        "{model: tei/bge, api_base: 'http://tei', backend: tei}",
    ],
)
def test_targets_litellm_or_the_native_clients_accept_stay_valid(tmp_path: Path, target: str) -> None:
    model_type = "text-embedding" if "tei/" in target else "llm"
    load_config(write(tmp_path, f"routes: [{{match: {{type: {model_type}}}, targets: [{target}]}}]\n"), env={})


def test_summary_model_backend_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="summary_model 'anthropc/x': litellm does not know"):
        load_config(write(tmp_path, "summary_model: {model: anthropc/x}\n"), env={})


def test_the_static_litellm_provider_list_matches_the_installed_litellm() -> None:
    from urllib.parse import urlsplit

    import litellm
    from litellm.llms.openai_like.json_loader import JSONProviderRegistry

    from gateway.config.litellm_providers import OPENAI_COMPATIBLE_HOSTS, PROVIDERS

    JSONProviderRegistry.load()
    installed = {getattr(p, "value", p) for p in litellm.provider_list} | set(JSONProviderRegistry._providers)
    assert installed == PROVIDERS, "regenerate gateway/config/litellm_providers.py from the installed litellm"
    hosts = {urlsplit(e if "://" in e else f"https://{e}").hostname for e in litellm.openai_compatible_endpoints}
    assert hosts == OPENAI_COMPATIBLE_HOSTS


def test_console_is_off_by_default_and_switched_by_the_environment() -> None:
    assert parse_config({}, "<t>", env={}).console.enabled is False
    on = parse_config({}, "<t>", env={"DIFY_GATEWAY_CONSOLE": "1", "DIFY_GATEWAY_ADMIN_KEY": "admin-from-env"})
    assert on.console.enabled is True and on.console.admin_key is not None
    assert on.console.admin_key.get_secret_value() == "admin-from-env"
    assert "admin-from-env" in on.secrets()  # so it is redacted from messages
    off = parse_config({"console": {"enabled": True}}, "<t>", env={"DIFY_GATEWAY_CONSOLE": "false"})
    assert off.console.enabled is False
    with pytest.raises(ConfigError, match="DIFY_GATEWAY_CONSOLE must be 1 or 0"):
        parse_config({}, "<t>", env={"DIFY_GATEWAY_CONSOLE": "maybe"})


def test_console_admin_key_from_the_file_wins_and_may_not_be_blank() -> None:
    config = parse_config(
        {"console": {"enabled": True, "admin_key": "os.environ/ADMIN"}},
        "<t>",
        env={"ADMIN": "from-file-ref", "DIFY_GATEWAY_ADMIN_KEY": "ignored"},
    )
    assert config.console.admin_key is not None and config.console.admin_key.get_secret_value() == "from-file-ref"
    with pytest.raises(ConfigError, match="console.admin_key: Value error, the key is empty"):
        parse_config({"console": {"admin_key": " "}}, "<t>", env={})
    with pytest.raises(ConfigError, match="console.enable: Extra inputs are not permitted"):
        parse_config({"console": {"enable": True}}, "<t>", env={})
