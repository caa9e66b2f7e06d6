"""The runbooks in docs/runbooks: sections, links, and commands that the real CLIs accept."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from health import cli as health_cli
from health.config import load_health_config
from health.loops import build_loop_specs
from outbox import cli as outbox_cli
from settlement import cli as settlement_cli

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = sorted((PROJECT_ROOT / "docs" / "runbooks").glob("*.md"))
OPERATIONS_DOCS = [
    *RUNBOOKS,
    PROJECT_ROOT / "docs" / "specs" / "worker-health-and-settlement.md",
    PROJECT_ROOT / "docs" / "configuration.md",
]
REQUIRED_SECTIONS = ("## Signals", "## Diagnose", "## Recover", "## Verify")

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "health": health_cli.build_parser,
    "outbox": outbox_cli.build_parser,
    "settlement": settlement_cli.build_parser,
}
SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)")


def heading_anchors(markdown: str) -> set[str]:
    """Return the anchors that GitHub gives the Markdown headings of ``markdown``."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def shell_commands(path: Path) -> list[str]:
    """Return the commands of the ``sh`` blocks of ``path``, continuation lines joined."""
    commands: list[str] = []
    for block in SH_BLOCK.findall(path.read_text()):
        joined = re.sub(r"\\\n\s*", "", block)
        commands.extend(line.strip() for line in joined.splitlines() if line.strip())
    return commands


def test_runbooks_expected_files() -> None:
    names = {path.name for path in RUNBOOKS}

    assert {
        "outbox-stuck-or-parked.md",
        "settlement-non-delivery.md",
        "worker-not-ready.md",
        "beat-not-firing.md",
        "broker-outage.md",
    } <= names


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda path: path.name)
def test_runbook_sections(runbook: Path) -> None:
    headings = [line for line in runbook.read_text().splitlines() if line.startswith("## ")]

    for section in REQUIRED_SECTIONS:
        assert section in headings, f"{runbook.name} has no {section}"


@pytest.mark.parametrize("document", OPERATIONS_DOCS, ids=lambda path: path.name)
def test_operations_doc_links(document: Path) -> None:
    for target, anchor in LINK.findall(document.read_text()):
        if "://" in target:
            continue
        linked = (document.parent / target).resolve() if target else document

        assert linked.exists(), f"{document.name}: {target}"
        if anchor:
            assert anchor in heading_anchors(linked.read_text()), f"{document.name}: {anchor}"


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda path: path.name)
def test_runbook_commands_parse(runbook: Path) -> None:
    checked = 0
    for command in shell_commands(runbook):
        if not command.startswith("python -m "):
            continue
        words = shlex.split(command.replace("HOSTNAME", "host-1"))
        if words[2] not in PARSERS:
            continue
        parser = PARSERS[words[2]]()
        try:
            parser.parse_args(words[3:])
        except SystemExit:
            pytest.fail(f"{runbook.name}: {command!r} is rejected by python -m {words[2]}")
        checked += 1

    assert checked > 0, f"{runbook.name} has no python -m command"


def test_runbook_task_names_exist() -> None:
    tasks = {spec.task for spec in build_loop_specs(load_health_config({})).values()}

    for runbook in OPERATIONS_DOCS:
        for name in re.findall(r"\btasks\.(?:outbox|settlement)\.[a-z]+\b", runbook.read_text()):
            assert name in tasks, f"{runbook.name}: unknown task {name}"


def test_runbook_loop_names_exist() -> None:
    loops = set(build_loop_specs(load_health_config({})))

    for runbook in OPERATIONS_DOCS:
        for name in re.findall(r"--loop ([a-z.]+)", runbook.read_text()):
            assert name in loops, f"{runbook.name}: unknown loop {name}"
