"""A truth summary as the lines ``mmgen truth`` and ``mmgen inspect`` print."""

from __future__ import annotations

from typing import Any


def _figure(figure: dict[str, Any]) -> str:
    interval = figure.get("interval")
    text = f"{figure['mean']:.3f}"
    if interval:
        text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    if figure.get("numerical_error") is not None:
        text += f" (numerical error {figure['numerical_error']:.1e})"
    return text


def describe(summary: dict[str, Any]) -> list[str]:
    """Human-readable lines of a truth summary (also used by ``mmgen inspect``)."""
    lines = [f"truth ({summary['split']} split, {summary['tuples']} tuples): {summary['density']}"]
    if not summary["finite"]:
        lines.append("  " + summary["statement"])
        for name, figure in summary["entropy_floor"].items():
            lines.append(f"  entropy floor Σ H(x), {name}: {_figure(figure)} nats")
        return lines
    lines.append(f"  log p(x): {_figure(summary['log_likelihood'])} nats")
    lines.append(f"  log p(x | c): {_figure(summary['conditional_log_likelihood'])} nats")
    for key, figure in summary["mutual_information"].items():
        lines.append(f"  I({key.replace('+', '; ')} | c): {_figure(figure)} nats")
        lines.append(f"  I({key.replace('+', '; ')}): {_figure(figure['unconditional'])} nats")
    if len(summary["modalities"]) > 2:
        lines.append(f"  total correlation | c: {_figure(summary['total_correlation'])} nats")
    lines.append(f"  numerical error: {summary['numerical_error']['how']}")
    return lines
