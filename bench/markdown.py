"""Render a benchmark report as markdown and put it between the result markers of a page."""

from __future__ import annotations

from pathlib import Path

from bench.common import Report, Sizes

RESULTS_START = "<!-- bench results: start (written by python -m bench) -->"
RESULTS_END = "<!-- bench results: end -->"


def _number(value: float, unit: str) -> str:
    if unit in ("events/s", "credits/s", "rows/s"):
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.2f}"


def _met(value: bool | None) -> str:
    if value is None:
        return ""
    return "met" if value else "**missed**"


def render_results(report: Report, sizes: Sizes, environment: dict[str, str]) -> str:
    lines = [RESULTS_START, "", "### Run", ""]
    lines += [f"- {label}: {text}" for label, text in environment.items()]
    lines += [
        f"- sizes: {sizes.outbox_rows:,} outbox rows (per-message baseline"
        f" {sizes.outbox_per_message_rows:,}, RabbitMQ {sizes.rabbitmq_rows:,}),"
        f" {sizes.settlement_players:,} settlement players, {sizes.runs} runs per figure,"
        f" {sizes.probe_runs} probe runs, {sizes.freshness_iterations} iterations per"
        " freshness run",
        "",
        "### Results",
        "",
        "| benchmark | figure | median | spread (min to max) | unit | runs | target | result"
        " | note |",
        "|---|---|---:|---|---|---:|---|---|---|",
    ]
    for figure in report.figures:
        low, high = figure.spread
        lines.append(
            f"| {figure.benchmark} | {figure.name} | {_number(figure.median, figure.unit)}"
            f" | {_number(low, figure.unit)} to {_number(high, figure.unit)} | {figure.unit}"
            f" | {len(figure.values)} | {figure.target} | {_met(figure.met)} | {figure.note} |"
        )
    for title, text in report.sections.items():
        lines += ["", f"### {title}", "", text]
    lines += ["", RESULTS_END]
    return "\n".join(lines)


def replace_results(path: Path, results: str) -> None:
    """Write ``results`` between the markers of ``path``, or append them when it has none."""
    text = path.read_text() if path.exists() else ""
    start = text.find(RESULTS_START)
    end = text.find(RESULTS_END)
    if start >= 0 and end > start:
        text = text[:start] + results + text[end + len(RESULTS_END) :]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + results + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
