"""Regenerate the generated parts of docs/protocol.md from the code.

Usage::

    python scripts/make_spec.py          # rewrite the generated blocks
    python scripts/make_spec.py --check  # exit 1 if the committed document is out of date

The field tables come from each message class's ``_schema`` (wire order, and
``FieldType.describe()`` for types and limits) and from the docstring under
each field; the limits table comes from the constants in the code. Only the
text between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->``
is replaced; everything else in the document is written by hand.

Rules that span several fields live in each class's ``_check`` method, which
cannot be rendered mechanically: :data:`CROSS_FIELD_RULES` states them in
words, and the script refuses to run when a kind with a ``_check`` has no
entry (or an entry has no ``_check``), so the lead adds one with the kind. A
fingerprint of each ``_check`` (:data:`RULES_FINGERPRINTS`) makes the script
refuse too when that code changes, until someone has re-read the rules.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import inspect
import re
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import protocol
import protocol._codec as codec
import protocol._messages as messages
from protocol import KINDS, Message
from protocol._schema import FieldType, Opt, Seq, Struct, Structure, to_wire

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = ROOT / "docs" / "protocol.md"

#: Rules across fields (or across items of an array), per kind or structure label.
CROSS_FIELD_RULES: dict[str, tuple[str, ...]] = {
    "charter": (
        "`deadline` is greater than `created`.",
        "`members_invite` is true only when `invite_only` is true.",
    ),
    "pledge": (
        "When `quantity` is 0 (a withdrawal), `max_price` and `tolerance` are both 0.",
        "When `quantity` is above 0, `max_price` is at least 1.",
    ),
    "offer": (
        "`tiers` are sorted by strictly increasing `min_quantity`, and their `unit_price` "
        "strictly decreases from one tier to the next.",
        "The first tier's `min_quantity` is at most `capacity`.",
        "`valid_until` is greater than `created`.",
    ),
    "counter": ("`valid_until` is greater than `created`.",),
    "certificate": (
        "`total` equals the sum of the allocations' `quantity`.",
        "`allocations` are sorted by `pledge` (bytewise, strictly increasing: no id twice).",
    ),
    "rfq": (
        "`respond_by` is greater than `created`.",
        "`deadline` is not less than `respond_by`.",
    ),
}

#: Digest of the ``_check`` code each entry above was written from (see rules_fingerprint).
RULES_FINGERPRINTS: dict[str, str] = {
    "charter": "0ec3b8c70eca37e4",
    "pledge": "a5e2373429bc5722",
    "offer": "b8c316f2f8722349",
    "counter": "703cc6bdfafc0fdf",
    "certificate": "4331a073f7f75f55",
    "rfq": "6e2f76eb5233434a",
}

#: Where each limit comes from, with what it means; rendered as the limits table.
LIMITS: tuple[tuple[str, Any, str], ...] = (
    ("VERSION", protocol.VERSION, "protocol version, first in every envelope and signed payload"),
    ("DOMAIN", protocol.DOMAIN, "domain-separation string that starts every signed payload"),
    (
        "MAX_ENVELOPE_SIZE",
        codec.MAX_ENVELOPE_SIZE,
        "largest envelope in bytes (inclusive), checked before decoding",
    ),
    ("MAX_ARRAY_LEN", codec.MAX_ARRAY_LEN, "most elements of any one array in an envelope"),
    (
        "MAX_STR_LEN / MAX_BIN_LEN",
        codec.MAX_ENVELOPE_SIZE,
        "longest str or bin header the decoder accepts (field limits are far lower)",
    ),
    ("MAX_QUANTITY", messages.MAX_QUANTITY, "largest quantity of units anywhere"),
    ("MAX_MONEY", messages.MAX_MONEY, "largest amount of money, in minor units"),
    ("MAX_TIME", messages.MAX_TIME, "latest time, in seconds since the UNIX epoch"),
    ("MAX_SEQ", messages.MAX_SEQ, "largest pledge sequence number"),
    (
        "MAX_CERTIFICATE_PLEDGES",
        messages.MAX_CERTIFICATE_PLEDGES,
        "most allocations in one quorum certificate",
    ),
)


class SpecError(Exception):
    """The document cannot be generated: a rule or marker is missing."""


def field_docs(cls: type[Any]) -> dict[str, str]:
    """The docstring written under each field of a dataclass, by field name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, after in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = _markdown(" ".join(after.value.value.split()))
    return docs


def _markdown(text: str) -> str:
    # Docstrings are reStructuredText: ``x`` and :func:`x` become Markdown code.
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _summary(cls: type[Any]) -> str:
    doc = _markdown(inspect.getdoc(cls) or "")
    paragraphs = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
    return "\n\n".join(paragraphs)


def _structs(ftype: FieldType) -> Iterator[type[Any]]:
    if isinstance(ftype, Struct):
        yield ftype.cls
        for _, inner in ftype.cls._schema:
            yield from _structs(inner)
    elif isinstance(ftype, Opt | Seq):
        yield from _structs(ftype.inner)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _describe(ftype: FieldType) -> str:
    text = ftype.describe()
    # Link a nested structure to its own table.
    for cls in _structs(ftype):
        label = cls._label
        text = text.replace(f"{cls.__name__} (array)", f"[{label}](#structure-{label}) (array)")
    return text


def _table(cls: type[Structure]) -> list[str]:
    docs = field_docs(cls)
    lines = ["| # | field | wire type and limits | meaning |", "|---|---|---|---|"]
    for index, (name, ftype) in enumerate(cls._schema):
        doc = docs.get(name)
        if not doc:
            raise SpecError(f"{cls.__name__}.{name} has no docstring: write one under the field")
        lines.append(f"| {index} | `{name}` | {_cell(_describe(ftype))} | {_cell(doc)} |")
    return lines


def _function_ast(function: Any) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(function)))


def rules_fingerprint(cls: type[Structure]) -> str:
    """A digest of ``cls._check`` and the module functions it calls (not their layout)."""
    tree = _function_ast(cls._check)
    module = sys.modules[cls.__module__]
    parts = [ast.dump(tree)]
    called = sorted(
        {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
    )
    for name in called:
        helper = getattr(module, name, None)
        if inspect.isfunction(helper) and helper.__module__ == cls.__module__:
            parts.append(ast.dump(_function_ast(helper)))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _rules(label: str, cls: type[Structure]) -> list[str]:
    has_check = cls._check is not Structure._check
    rules = CROSS_FIELD_RULES.get(label)
    if has_check and rules is None:
        raise SpecError(
            f"{cls.__name__} has rules across fields (_check) that the specification does "
            f"not state: add CROSS_FIELD_RULES[{label!r}] to scripts/make_spec.py"
        )
    if has_check:
        fingerprint = rules_fingerprint(cls)
        if RULES_FINGERPRINTS.get(label) != fingerprint:
            raise SpecError(
                f"{cls.__name__}._check is not the code CROSS_FIELD_RULES[{label!r}] was "
                "written from: make sure those rules still say what it checks, then set "
                f"RULES_FINGERPRINTS[{label!r}] = {fingerprint!r} in scripts/make_spec.py"
            )
    if rules is not None and not has_check:
        raise SpecError(
            f"CROSS_FIELD_RULES[{label!r}] in scripts/make_spec.py states rules that "
            f"{cls.__name__} does not check: remove or fix them"
        )
    if not rules:
        return ["No rules across fields."]
    return ["Rules across fields (refused with `out-of-range`):", ""] + [f"- {r}" for r in rules]


def render_kinds() -> str:
    """The per-kind sections: summary, field table, cross-field rules; then structures."""
    out = [
        "| kind | body | fields |",
        "|---|---|---|",
    ]
    for kind, cls in KINDS.items():
        out.append(f"| `{kind}` | [{cls.__name__}](#kind-{kind}) | {len(cls._schema)} |")
    structs: dict[str, type[Any]] = {}
    for kind, cls in KINDS.items():
        out += ["", f'<a id="kind-{kind}"></a>', f"### `{kind}`: {cls.__name__}", ""]
        out += [_summary(cls), ""]
        out += _table(cls)
        out += ["", *_rules(kind, cls)]
        for _, ftype in cls._schema:
            for struct in _structs(ftype):
                structs.setdefault(struct._label, struct)
    if structs:
        out += ["", "### Nested structures", ""]
        out.append("Each is encoded as an array of its fields, in this order.")
        for label, struct in structs.items():
            out += ["", f'<a id="structure-{label}"></a>', f"#### `{label}`: {struct.__name__}"]
            out += ["", _summary(struct), ""]
            out += _table(struct)
            if struct._check is not Structure._check or label in CROSS_FIELD_RULES:
                out += ["", *_rules(label, struct)]
    return "\n".join(out)


def render_limits() -> str:
    """The limits table, from the constants the code uses."""
    lines = ["| name | value | meaning |", "|---|---|---|"]
    for name, value, meaning in LIMITS:
        shown = f'"{value}"' if isinstance(value, str) else f"{value:,}"
        if isinstance(value, int) and value >= 2**20 and (value & (value - 1)) == 0:
            shown += f" (2^{value.bit_length() - 1})"
        lines.append(f"| `{name}` | {shown} | {meaning} |")
    return "\n".join(lines)


def render_example() -> str:
    """A worked example: one pledge, its signed payload, envelope and id, byte by byte."""
    alice = protocol.Identity.from_seed(bytes([0x01]) * 32)
    pledge = protocol.Pledge(
        circle=bytes(range(32)),
        seq=1,
        quantity=3,
        max_price=1250,
        currency="EUR",
        tolerance=0,
        created=1_700_000_000,
    )
    env = protocol.seal(pledge, alice)
    body = codec.pack(to_wire(pledge))
    signed = protocol.signing_bytes(pledge.kind, to_wire(pledge))
    kind = codec.pack(pledge.kind)
    parts = [
        ("array header, 5 items", b"\x95"),
        ("version 1", b"\x01"),
        ('kind "pledge" (fixstr)', kind),
        ("body: array of 7 fields", body),
        ("signer: bin8 header, 32-byte key", env.data[-100:-66]),
        ("signature: bin8 header, 64 bytes", env.data[-66:]),
    ]
    assert b"".join(p for _, p in parts) == env.data
    lines = [
        "Alice's key comes from the seed `01` x 32; she pledges 3 units at most 12.50 EUR",
        "in the circle whose id is the bytes `00 01 02 ... 1f`, at time 1700000000:",
        "",
        "```",
        "Pledge(circle=bytes(range(32)), seq=1, quantity=3, max_price=1250, currency='EUR',",
        "       tolerance=0, created=1700000000)",
        "```",
        "",
        f"- signer (public key): `{alice.public_key.hex()}`",
        f"- body ({len(body)} bytes): `{body.hex()}`",
        f"- signed payload ({len(signed)} bytes): `{signed.hex()}`",
        f"- signature: `{env.signature.hex()}`",
        f"- envelope ({len(env.data)} bytes), part by part:",
        "",
        "| part | bytes |",
        "|---|---|",
    ]
    lines += [f"| {label} | `{data.hex()}` |" for label, data in parts]
    lines += ["", f"- id (BLAKE2b-256 of the envelope): `{env.id.hex()}`"]
    return "\n".join(lines)


GENERATORS = {"kinds": render_kinds, "limits": render_limits, "example": render_example}


def update(text: str) -> str:
    """``text`` with every generated block replaced by its current rendering."""
    for name, render in GENERATORS.items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED: {name} [^>]*-->\n)(?:.*?\n)?(<!-- END GENERATED: {name} -->)",
            re.DOTALL,
        )
        if len(pattern.findall(text)) != 1:
            raise SpecError(
                f"docs/protocol.md must hold exactly one generated block {name!r} "
                f"(<!-- BEGIN GENERATED: {name} ... --> ... <!-- END GENERATED: {name} -->)"
            )
        match = pattern.search(text)
        assert match is not None
        text = text[: match.end(1)] + render() + "\n" + text[match.start(2) :]
    return text


def _check_message_classes() -> None:
    for kind, cls in KINDS.items():
        if not issubclass(cls, Message) or cls.kind != kind:
            raise SpecError(f"KINDS[{kind!r}] is not a message of that kind")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the document is out of date")
    args = parser.parse_args(argv)
    current = SPEC_PATH.read_text()
    try:
        _check_message_classes()
        text = update(current)
    except SpecError as exc:
        print(f"make_spec: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if text != current:
            print(
                "docs/protocol.md is out of date: run python scripts/make_spec.py", file=sys.stderr
            )
            return 1
        return 0
    SPEC_PATH.write_text(text)
    print(f"updated the generated blocks of {SPEC_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
