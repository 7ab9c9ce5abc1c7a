"""docs/protocol.md: its generated parts are current, and its prose matches the code.

The specification is what a second implementation is written from, so the
claims it makes by hand (the canonical encoding table, the signed payload's
bytes, the envelope layout, the refusal reasons) are checked here against the
library, not just its generated tables.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import sys
from types import ModuleType
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

import protocol
from protocol import _errors
from protocol._codec import MAX_ARRAY_LEN, canonical_unpack, pack

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "protocol.md"
SPEC = SPEC_PATH.read_text()


def _load_script() -> ModuleType:
    # scripts/ is not a package: load the generator from its path.
    name = "make_spec_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "make_spec.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


make_spec = _load_script()


def test_generated_blocks_are_current() -> None:
    try:
        text = make_spec.update(SPEC)
    except make_spec.SpecError as exc:
        raise AssertionError(str(exc)) from None
    assert text == SPEC, "docs/protocol.md is out of date: run python scripts/make_spec.py"


def test_every_kind_has_a_section_with_every_field_in_order() -> None:
    for kind, cls in protocol.KINDS.items():
        start = SPEC.index(f'<a id="kind-{kind}"></a>')
        end = SPEC.find('<a id="', start + 1)
        section = SPEC[start:end]
        rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.MULTILINE)
        assert rows == [(str(i), name) for i, (name, _) in enumerate(cls._schema)], kind


def test_a_kind_without_a_rule_entry_is_reported() -> None:
    # The generator must refuse, not silently omit, rules it cannot render.
    saved = make_spec.CROSS_FIELD_RULES.pop("pledge")
    try:
        try:
            make_spec.render_kinds()
        except make_spec.SpecError as exc:
            assert "CROSS_FIELD_RULES['pledge']" in str(exc)
        else:
            raise AssertionError("render_kinds() accepted a kind with unstated rules")
    finally:
        make_spec.CROSS_FIELD_RULES["pledge"] = saved


def test_changed_rules_code_is_reported() -> None:
    saved = make_spec.RULES_FINGERPRINTS["offer"]
    make_spec.RULES_FINGERPRINTS["offer"] = "0" * 16
    try:
        try:
            make_spec.render_kinds()
        except make_spec.SpecError as exc:
            assert "RULES_FINGERPRINTS['offer']" in str(exc)
        else:
            raise AssertionError("render_kinds() accepted rules written for other code")
    finally:
        make_spec.RULES_FINGERPRINTS["offer"] = saved


def _reasons_in_error_tree() -> set[str]:
    doc = _errors.__doc__ or ""
    found: set[str] = set()
    for line in doc.splitlines():
        match = re.search(r"reasons? (\".*)$", line)
        if match:
            found.update(re.findall(r'"([a-z-]+)"', match.group(1)))
    return found


def test_every_reason_is_documented() -> None:
    reasons = _reasons_in_error_tree()
    assert {"oversize", "bad-signature", "non-canonical"} <= reasons  # the parse works
    vectors = json.loads((ROOT / "docs" / "protocol" / "vectors.json").read_text())
    reasons |= {v["reason"] for v in vectors if v["reason"] is not None}
    missing = sorted(r for r in reasons if f"`{r}`" not in SPEC)
    assert not missing, f"reasons not in docs/protocol.md: {missing}"


def test_refusal_table_names_the_right_error_classes() -> None:
    rows = re.findall(r"^\| `([a-z-]+)` \| `(\w+)` \|", SPEC, re.MULTILINE)
    assert len(rows) >= 10
    for reason, class_name in rows:
        cls = getattr(protocol, class_name)
        assert issubclass(cls, protocol.InvalidMessage), class_name
        if cls.reason != reason:
            # Classes with several reasons set the others per instance.
            assert class_name in {"MalformedEncoding", "InvalidField", "InvalidMessage"}, reason


def test_signed_payload_prefix_is_as_written() -> None:
    match = re.search(r"the signed payload is the bytes `([0-9a-f ]+)`", " ".join(SPEC.split()))
    assert match is not None
    prefix = bytes.fromhex(match.group(1))
    assert protocol.signing_bytes("pledge", [1]) == prefix + pack("pledge") + pack([1])


def test_envelope_layout_and_signed_payload_as_written() -> None:
    vectors = json.loads((ROOT / "docs" / "protocol" / "vectors.json").read_text())
    for vector in (v for v in vectors if v["valid"]):
        data = bytes.fromhex(vector["envelope_hex"])
        assert data[:2] == b"\x95\x01"
        assert data[-100:-98] == b"\xc4\x20" and data[-66:-64] == b"\xc4\x40"
        _, kind, body, _, _ = msgpack.unpackb(data)
        signed = protocol.signing_bytes(kind, body)
        assert signed[17:] == data[2:-100], vector["name"]


def test_limits_in_prose_match_the_code() -> None:
    assert f"{protocol.MAX_ENVELOPE_SIZE:,} bytes" in SPEC
    assert f"`MAX_ARRAY_LEN` = {MAX_ARRAY_LEN:,}" in SPEC


# The canonical-form table, written as a reference encoder: it must agree with
# the library's encoder on every value the wire can carry.


def _reference_int(n: int) -> bytes:
    if 0 <= n <= 127:
        return bytes([n])
    if -32 <= n < 0:
        return n.to_bytes(1, "big", signed=True)
    if n > 0:
        for header, size in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
            if n < 1 << (8 * size):
                return bytes([header]) + n.to_bytes(size, "big")
    for header, size in ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
        if n >= -(1 << (8 * size - 1)):
            return bytes([header]) + n.to_bytes(size, "big", signed=True)
    raise AssertionError(n)


def _length(n: int, short: int | None, short_max: int, headers: tuple[int, int, int]) -> bytes:
    if short is not None and n <= short_max:
        return bytes([short | n])
    for header, size in zip(headers, (1, 2, 4), strict=True):
        if n < 1 << (8 * size):
            return bytes([header]) + n.to_bytes(size, "big")
    raise AssertionError(n)


def reference_pack(value: Any) -> bytes:
    """Canonical msgpack exactly as the specification's table states it."""
    if value is None:
        return b"\xc0"
    if value is True or value is False:
        return b"\xc3" if value else b"\xc2"
    if type(value) is int:
        return _reference_int(value)
    if type(value) is str:
        raw = value.encode("utf-8")
        return _length(len(raw), 0xA0, 31, (0xD9, 0xDA, 0xDB)) + raw
    if type(value) is bytes:
        return _length(len(value), None, 0, (0xC4, 0xC5, 0xC6)) + value
    if type(value) is list:
        # fixarray up to 15 items; array 8 does not exist, so the first header is array 16.
        if len(value) <= 15:
            head = bytes([0x90 | len(value)])
        else:
            head = b"\xdc" + len(value).to_bytes(2, "big")
        return head + b"".join(reference_pack(item) for item in value)
    raise AssertionError(type(value))


wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=300)
    | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=20),
    max_leaves=40,
)


@given(wire_values)
def test_canonical_table_agrees_with_the_library(value: Any) -> None:
    assert reference_pack(value) == pack(value)


unsigned_encodings = st.sampled_from([(0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)]).flatmap(
    lambda hs: st.tuples(st.just(hs), st.integers(min_value=0, max_value=(1 << (8 * hs[1])) - 1))
)


@given(unsigned_encodings)
def test_an_integer_is_accepted_only_in_its_shortest_header(
    encoding: tuple[tuple[int, int], int],
) -> None:
    (header, size), n = encoding
    data = bytes([header]) + n.to_bytes(size, "big")
    if reference_pack(n) == data:
        assert canonical_unpack(data) == n
    else:
        try:
            canonical_unpack(data)
        except protocol.NonCanonical:
            pass
        else:
            raise AssertionError(f"{data.hex()} was accepted as canonical")
