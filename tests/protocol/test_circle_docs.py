"""docs/circles.md: its state diagram is generated from CIRCLE_TRANSITIONS and kept current.

Regenerate the diagram with ``python -m tests.protocol.test_circle_docs``.
"""

from __future__ import annotations

import pathlib
import re

from protocol import CIRCLE_TRANSITIONS, SMALLER_TIER_WINDOW, CircleInput, CircleStatus

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "circles.md"
BEGIN = "<!-- state diagram: generated from protocol.CIRCLE_TRANSITIONS -->"
END = "<!-- end of generated state diagram -->"


def diagram() -> str:
    """A mermaid state diagram: one arrow per change of status, labelled with its inputs."""
    edges: dict[tuple[CircleStatus, CircleStatus], list[str]] = {}
    for (before, kind), after in CIRCLE_TRANSITIONS.items():
        for status in after:
            if status is not before:
                edges.setdefault((before, status), []).append(kind.value)
    order = list(CircleStatus)
    inputs = [k.value for k in CircleInput]
    lines = ["```mermaid", "stateDiagram-v2", "    [*] --> forming : charter"]
    for before, after in sorted(edges, key=lambda e: (order.index(e[0]), order.index(e[1]))):
        labels = sorted(edges[(before, after)], key=inputs.index)
        lines.append(f"    {before.value} --> {after.value} : {', '.join(labels)}")
    lines.append("```")
    return "\n".join(lines)


def generated_section(text: str) -> str:
    match = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    assert match is not None, f"docs/circles.md lacks the {BEGIN!r} block"
    return match.group(1)


def test_state_diagram_is_generated_from_the_table() -> None:
    assert generated_section(DOC.read_text(encoding="utf-8")) == diagram()


def test_docs_name_every_refusal_reason_and_constant() -> None:
    text = DOC.read_text(encoding="utf-8")
    for reason in (
        "unknown-circle",
        "late",
        "wrong-currency",
        "above-ceiling",
        "unadmitted",
        "superseded",
        "equivocator",
        "bad-extension",
        "not-canonical",
        "not-cheapest-tier",
        "member-twice",
        "over-capacity",
    ):
        assert f"`{reason}`" in text, reason
    assert f"{SMALLER_TIER_WINDOW // 3600} hours" in text


if __name__ == "__main__":
    current = DOC.read_text(encoding="utf-8")
    DOC.write_text(current.replace(generated_section(current), diagram()), encoding="utf-8")
    print(f"updated {DOC}")
