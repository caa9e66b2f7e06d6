"""docs/configuration.md against the code: every setting is documented, every variable is real."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings
from health.config import DEFAULTS as HEALTH_DEFAULTS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION_DOC = PROJECT_ROOT / "docs" / "configuration.md"
CONFTEST = PROJECT_ROOT / "tests" / "conftest.py"
#: Folders and files searched for a variable that is not a setting.
SOURCES = ("app", "health", "outbox", "settlement", "tasks", "tests", "docker-compose.yml")

VARIABLE_CELL = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|")


def doc_sections() -> dict[str, str]:
    """Return the text of each ``## `` section of the doc by its title."""
    sections: dict[str, str] = {}
    title = ""
    for line in CONFIGURATION_DOC.read_text().splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            sections[title] = ""
        elif title:
            sections[title] += line + "\n"
    return sections


def table_rows(section: str) -> dict[str, list[str]]:
    """Return the cells of each table row whose first cell is a variable, keyed by the variable."""
    rows = {}
    for line in section.splitlines():
        match = VARIABLE_CELL.match(line)
        if match:
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|"))]
            rows[match.group(1)] = cells
    return rows


def source_text() -> str:
    texts: list[str] = []
    for name in SOURCES:
        path = PROJECT_ROOT / name
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        texts.extend(file.read_text() for file in files)
    return "\n".join(texts)


def documented_default(cell: str) -> str:
    return "" if cell == "empty" else cell.strip("`")


def test_configuration_doc_lists_every_setting() -> None:
    documented = set(table_rows(doc_sections()["Settings"]))
    fields = {name.upper() for name in Settings.model_fields}

    assert fields - documented == set(), "settings missing from docs/configuration.md"
    assert documented - fields == set(), "documented settings that Settings does not have"


def test_configuration_doc_defaults() -> None:
    rows = table_rows(doc_sections()["Settings"])

    for name, field in Settings.model_fields.items():
        default = documented_default(rows[name.upper()][1])
        if isinstance(field.default, bool) or not isinstance(field.default, int | float):
            assert default == str(field.default), name
        else:
            assert float(default) == float(field.default), name


def test_configuration_doc_health_variables() -> None:
    section = doc_sections()["Health probes"]
    paragraph = section.split("names, defaults and bounds:", 1)[1].split("A test", 1)[0]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", paragraph))

    assert named == set(HEALTH_DEFAULTS)


def test_configuration_doc_other_variables_exist() -> None:
    sections = doc_sections()
    text = source_text()
    documented = {
        **table_rows(sections["Other variables"]),
        **table_rows(sections["Test-only variables"]),
    }

    assert {"TEST_POSTGRES_URL", "TEST_REDIS_URL", "TEST_RABBITMQ_URL", "CI"} <= set(documented)
    for name in documented:
        assert f'"{name}"' in text or "${" + name in text, f"{name} is read nowhere"


def test_configuration_doc_test_defaults() -> None:
    rows = table_rows(doc_sections()["Test-only variables"])
    conftest = CONFTEST.read_text()

    for name in ("TEST_POSTGRES_URL", "TEST_REDIS_URL", "TEST_RABBITMQ_URL"):
        default = rows[name][1].strip("`")
        assert f'os.environ.get(\n    "{name}", "{default}"\n)' in conftest or (
            f'os.environ.get("{name}", "{default}")' in conftest
        ), name
