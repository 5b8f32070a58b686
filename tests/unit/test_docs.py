"""The documentation stays true to the code and to itself.

- Every configuration field, walked recursively from `GatewayConfig` (nested models, list items and optional
  models included), is named in docs/configuration.md: a field counts as named when its key (`ttl_s`) or its dotted
  path (`cache.embeddings.ttl_s`) appears in backticks somewhere on the page, alone or inside a longer code span, or
  the key is written as a YAML key (`ttl_s:` starting a line, after indentation or `- `) in a yaml code block.
- Every relative link in README.md and docs/*.md points to a file that exists, and its `#anchor`, if any, to a
  heading of that file (GitHub's slug rules: lower case, punctuation dropped, spaces to hyphens).
- README.md has at most 260 lines.
- docs/architecture.md shows the layer contract of pyproject.toml: its diagram has one box per layer, naming the
  layer's modules in the same order; its module map names every top-level module and package of gateway/.
"""

from __future__ import annotations

import re
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from gateway.config import GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _models(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models(arg)


def _config_fields() -> list[tuple[str, str]]:
    seen: set[type[BaseModel]] = set()
    fields: list[tuple[str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            fields.append((prefix + name, name))
            for sub in _models(field.annotation):
                if sub not in seen:
                    seen.add(sub)
                    walk(sub, f"{prefix}{name}.")

    walk(GatewayConfig, "")
    return fields


def _code_spans(text: str) -> set[str]:
    spans = set(re.findall(r"`([^`\n]+)`", text))
    words = {word for span in spans for word in re.split(r"[^\w.\[\]]+", span) if word}
    yaml_keys: set[str] = set()
    for block in re.findall(r"(?ms)^```yaml\n(.*?)^```", text):
        yaml_keys |= set(re.findall(r"(?m)^[ \t]*(?:- )?(\w+):", block))
    return spans | words | yaml_keys


def test_every_config_field_is_named_in_configuration_md() -> None:
    spans = _code_spans((ROOT / "docs" / "configuration.md").read_text(encoding="utf-8"))
    missing = [path for path, key in _config_fields() if path not in spans and key not in spans]
    assert missing == []


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", page.read_text(encoding="utf-8"))
    return {_slug(h) for h in re.findall(r"(?m)^#{1,6} (.+)$", text)}


def test_relative_links_point_to_existing_files_and_headings() -> None:
    broken: list[str] = []
    for page in PAGES:
        text = re.sub(r"(?ms)^```.*?^```", "", page.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 260


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _contract_layers() -> list[list[str]]:
    """The modules of each layer of the import-linter contract, top first, without the ``gateway.`` prefix."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    return [[m.strip().strip("()").removeprefix("gateway.") for m in layer.split("|")] for layer in layers]


def test_architecture_diagram_draws_the_layer_contract() -> None:
    text = ARCHITECTURE.read_text()
    diagram = text[text.index("```mermaid\nflowchart") : text.index("```\n", text.index("```mermaid\nflowchart") + 3)]
    boxes = [
        [m.strip().removeprefix("gateway.") for m in label.split("|")]
        for label in re.findall(r'\["([^"]+)"\]', diagram)
    ]
    assert boxes == _contract_layers()


def test_module_map_names_every_top_level_module() -> None:
    text = ARCHITECTURE.read_text()
    module_map = text[text.index("## Module map") :]
    package = ROOT / "gateway"
    names = [
        f"gateway/{p.name}/" if p.is_dir() else f"gateway/{p.name}"
        for p in sorted(package.iterdir())
        if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")
    ]
    missing = [name for name in names if f"`{name}`" not in module_map]
    assert not missing, f"docs/architecture.md's module map does not name {missing}"
