"""The signed QR payload of SPEC §4: format, canonical parsing, and that no change verifies."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labels import payload as lp

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
PUBLIC = [KEY.public_key()]
ALNUM = sorted(lp.QR_ALPHANUMERIC)
FORMAT = re.compile(
    r"GMP1:(SM|IM|FP|QS|RS|WB):ITM-[A-Z2-7]{8}:[0-9A-Z]{13}[0-9A-Z*]:([0-9]{12}|-):[A-Z2-7]{103}"
)

kinds = st.sampled_from(sorted(lp.ITEM_KIND_CODES))
item_ids = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=8, max_size=8).map(
    lambda s: f"ITM-{s}"
)
coi_ids = st.builds(
    lambda body, check: body + check,
    st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=13, max_size=13),
    st.sampled_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"),
)
expiries = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
    ).map(lambda d: d.replace(second=0, microsecond=0)),
)
serials = st.one_of(st.none(), st.integers(1, lp.MAX_SERIAL))
# Labels of material lots and equipment (SPEC §11): COI field "-", always a serial.
lot_ids = st.text("0123456789", min_size=6, max_size=6).map(lambda s: f"LOT-{s}")
equipment_ids = st.from_regex(r"[0-9A-Z][0-9A-Z.\-]{0,39}", fullmatch=True)
asset_subjects = st.one_of(st.tuples(st.just("LOT"), lot_ids),
                           st.tuples(st.just("EQP"), equipment_ids))
asset_payloads = st.builds(
    lambda subject, expiry, serial: lp.sign(KEY, subject[0], subject[1], lp.NO_COI, expiry,
                                            serial),
    asset_subjects, expiries, st.integers(1, lp.MAX_SERIAL))
# Both forms: the per-copy payload (with a serial) and the 6-field one from before, and
# the asset labels.
payloads = st.one_of(
    st.builds(lambda *a: lp.sign(KEY, *a), kinds, item_ids, coi_ids, expiries, serials),
    asset_payloads)
copy_payloads = st.one_of(st.builds(
    lambda *a: lp.sign(KEY, *a), kinds, item_ids, coi_ids, expiries, st.integers(1, lp.MAX_SERIAL)
), asset_payloads)
COPY_FORMAT = re.compile(
    r"GMP1:(SM|IM|FP|QS|RS|WB):ITM-[A-Z2-7]{8}:[0-9A-Z]{13}[0-9A-Z*]:([0-9]{12}|-):"
    r"[1-9][0-9]{0,8}:[A-Z2-7]{103}"
)


def test_payload_has_the_spec_format_and_round_trips() -> None:
    expiry = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    text = lp.sign(KEY, "FP", "ITM-ABCDEFGH", "A999926000001*", expiry)
    assert FORMAT.fullmatch(text), text
    assert text.startswith("GMP1:FP:ITM-ABCDEFGH:A999926000001*:202612011030:")
    assert set(text) <= lp.QR_ALPHANUMERIC
    parsed = lp.parse_and_verify(text, PUBLIC)
    assert parsed == lp.LabelPayload(
        "FP", "ITM-ABCDEFGH", "A999926000001*", expiry, text.rsplit(":", 1)[1], text
    )
    # The signature covers everything before the last ':' (SPEC §4).
    signature = lp.decode_signature(parsed.signature)
    KEY.public_key().verify(signature, text.rsplit(":", 1)[0].encode())


def test_a_copy_payload_carries_its_serial_under_the_signature() -> None:
    expiry = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    text = lp.sign(KEY, "FP", "ITM-ABCDEFGH", "A999926000001*", expiry, 12)
    assert COPY_FORMAT.fullmatch(text), text
    assert text.startswith("GMP1:FP:ITM-ABCDEFGH:A999926000001*:202612011030:12:")
    assert set(text) <= lp.QR_ALPHANUMERIC
    parsed = lp.parse_and_verify(text, PUBLIC)
    assert parsed.serial == "12" and parsed.expires_at == expiry
    assert parsed.signed_part == "GMP1:FP:ITM-ABCDEFGH:A999926000001*:202612011030:12"
    # the older 6-field form of the same content still verifies, without a serial
    legacy = lp.sign(KEY, "FP", "ITM-ABCDEFGH", "A999926000001*", expiry)
    assert lp.parse_and_verify(legacy, PUBLIC).serial is None
    # the serial is signed: dropped, moved to another copy or spelt otherwise, it fails
    signature = text.rsplit(":", 1)[1]
    for head in (legacy.rsplit(":", 1)[0], parsed.signed_part[:-2] + "13"):
        with pytest.raises(lp.InvalidLabel) as info:
            lp.parse_and_verify(f"{head}:{signature}", PUBLIC)
        assert info.value.code == "bad_signature"
    with pytest.raises(lp.InvalidLabel) as info:
        lp.parse_and_verify(text.replace(":12:", ":012:"), PUBLIC)
    assert info.value.code == "malformed"


@settings(max_examples=200)
@given(subject=asset_subjects, expiry=expiries, serial=st.integers(1, lp.MAX_SERIAL))
def test_an_asset_payload_round_trips(subject: tuple[str, str], expiry, serial: int) -> None:
    """SPEC §11: ``GMP1:LOT:<lot id>:-:<expiry or ->:<serial>:<signature>`` (EQP alike)."""
    kind, subject_id = subject
    text = lp.sign(KEY, kind, subject_id, lp.NO_COI, expiry, serial)
    assert text.startswith(f"GMP1:{kind}:{subject_id}:-:{lp.format_expiry(expiry)}:{serial}:")
    assert set(text) <= lp.QR_ALPHANUMERIC
    parsed = lp.parse_and_verify(text, PUBLIC)
    assert parsed == lp.LabelPayload(kind, subject_id, "-", expiry, text.rsplit(":", 1)[1],
                                     text, str(serial))
    assert parsed.asset


def test_item_payloads_are_not_assets() -> None:
    assert not lp.parse(lp.sign(KEY, "FP", "ITM-ABCDEFGH", "A999926000001*", None, 1)).asset


@pytest.mark.parametrize(
    ("kind", "subject", "coi", "serial"),
    [
        ("LOT", "LOT-000123", "A999926000001A", 1),  # a lot names no patient
        ("EQP", "BSC-01", "A999926000001A", 1),
        ("FP", "ITM-AAAAAAAA", "-", 1),  # an item label needs its COI
        ("LOT", "LOT-000123", "-", None),  # asset labels always carry a serial
        ("LOT", "ITM-AAAAAAAA", "-", 1),  # not a lot id
        ("EQP", "bsc 01", "-", 1),
    ],
)
def test_signing_refuses_asset_fields_outside_the_format(kind, subject, coi, serial) -> None:
    with pytest.raises(ValueError):
        lp.sign(KEY, kind, subject, coi, None, serial)


def _forge(head: str) -> str:
    """A payload signed by our key over content the signer would refuse to sign."""
    return f"{head}:{lp.encode_signature(KEY.sign(head.encode('ascii')))}"


@pytest.mark.parametrize(
    "head",
    [
        "GMP1:LOT:LOT-000123:A999926000001A:-:1",  # a LOT payload with a COI
        "GMP1:EQP:BSC-01:A999926000001A:-:1",
        "GMP1:FP:ITM-AAAAAAAA:-:-:1",  # an item payload with "-"
        "GMP1:SM:ITM-AAAAAAAA:-:-",
        "GMP1:LOT:LOT-000123:-:-",  # the 6-field form is for items printed before serials
        "GMP1:EQP:BSC-01:-:-",
        "GMP1:LOT:ITM-AAAAAAAA:-:-:1",
        "GMP1:LOT:LOT-000123::-:1",
    ],
)
def test_mixed_up_asset_and_item_payloads_are_malformed(head: str) -> None:
    """Even under a genuine signature, a LOT/EQP payload with a COI or an item payload
    with ``-`` is malformed: one text form per payload."""
    with pytest.raises(lp.InvalidLabel) as info:
        lp.parse_and_verify(_forge(head), PUBLIC)
    assert info.value.code == "malformed"


@pytest.mark.parametrize("serial", [0, -1, "01", "A", lp.MAX_SERIAL + 1])
def test_signing_refuses_a_serial_outside_the_format(serial) -> None:
    with pytest.raises(ValueError, match="serial"):
        lp.sign(KEY, "FP", "ITM-ABCDEFGH", "A999926000001*", None, serial)


def test_expiry_is_written_in_utc_and_dash_without_expiry() -> None:
    from zoneinfo import ZoneInfo

    paris = datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert ":202607011000:" in lp.sign(KEY, "SM", "ITM-AAAAAAAA", "A999926000001A", paris)
    assert ":-:" in lp.sign(KEY, "WB", "ITM-AAAAAAAA", "A999926000001A", None)
    with pytest.raises(ValueError, match="aware"):
        lp.sign(KEY, "SM", "ITM-AAAAAAAA", "A999926000001A", datetime(2026, 7, 1))


@pytest.mark.parametrize(
    ("kind", "item", "coi"),
    [
        ("XX", "ITM-AAAAAAAA", "A999926000001A"),
        ("FP", "ITM:A", "A999926000001A"),
        ("FP", "ITM-AAAAAAAA", "A99992600001A"),
        ("FP", "ITM-AAAAAAAA", "A999926000001:"),
    ],
)
def test_signing_refuses_fields_outside_the_format(kind: str, item: str, coi: str) -> None:
    with pytest.raises(ValueError):
        lp.sign(KEY, kind, item, coi, None)


@pytest.mark.parametrize("wedge", ["{}", "{}\r\n", "{}\n", "  {}\t\r\n", "{lower}", "{lower}\r"])
def test_scanner_input_is_normalised(wedge: str) -> None:
    text = lp.sign(KEY, "QS", "ITM-ABCDEFGH", "A999926000001*", None)
    typed = wedge.replace("{lower}", text.lower()).replace("{}", text)
    assert lp.normalise_scan(typed) == text
    assert lp.parse_and_verify(typed, PUBLIC).text == text


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   \r\n",
        "hello",
        "GMP1",
        "GMP1:FP",
        "GMP2:FP:ITM-A:A999926000001A:-:AAAA",
        "GMP1:FP:ITM-A:A999926000001A:-",
        "GMP1:FP:ITM-A:A999926000001A:-:" + "A" * 102,
        "GMP1:FP:ITM-A:A999926000001A:202613011030:" + "A" * 103,
        "GMP1:FP:ITM-A:A999926000001A:20261301103:" + "A" * 103,
        "GMP1:FP:ITM-A:A999926000001A:-:" + "A" * 103 + ":X",
        "GMP1:FP:ITM-Ä:A999926000001A:-:" + "A" * 103,
        "GMP1:FP:ITM-A:A999926000001A:-:" + "1" * 103,
        "x" * 10_000,
        "\x00\x01\x02",
    ],
)
def test_garbage_is_malformed(garbage: str) -> None:
    with pytest.raises(lp.InvalidLabel) as info:
        lp.parse_and_verify(garbage, PUBLIC)
    assert info.value.code == "malformed"


def test_well_formed_but_unsigned_is_bad_signature() -> None:
    text = "GMP1:FP:ITM-ABCDEFGH:A999926000001*:-:" + "A" * 103
    with pytest.raises(lp.InvalidLabel) as info:
        lp.parse_and_verify(text, PUBLIC)
    assert info.value.code == "bad_signature"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(text=payloads, data=st.data())
def test_any_single_character_change_fails(text: str, data: st.DataObject) -> None:
    """Replace one character by any other character a QR label can carry."""
    position = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.sampled_from([c for c in ALNUM if c != text[position]]))
    changed = text[:position] + replacement + text[position + 1 :]
    if lp.normalise_scan(changed) == text:  # a space at either end is scanner noise
        assert replacement == " " and position in (0, len(text) - 1)
        return
    with pytest.raises(lp.InvalidLabel) as info:
        lp.parse_and_verify(changed, PUBLIC)
    assert info.value.code in ("malformed", "bad_signature")


@pytest.mark.requirement("21 CFR 11.10(a)")
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(text=copy_payloads, data=st.data())
def test_any_single_character_change_of_a_copy_payload_fails(
    text: str, data: st.DataObject
) -> None:
    """SPEC §4: one changed character of a per-copy payload (its serial included)
    never verifies, whatever QR character replaces it."""
    position = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.sampled_from([c for c in ALNUM if c != text[position]]))
    changed = text[:position] + replacement + text[position + 1 :]
    if lp.normalise_scan(changed) == text:  # a space at either end is scanner noise
        assert replacement == " " and position in (0, len(text) - 1)
        return
    with pytest.raises(lp.InvalidLabel) as info:
        lp.parse_and_verify(changed, PUBLIC)
    assert info.value.code in ("malformed", "bad_signature")


@settings(max_examples=200)
@given(text=payloads, data=st.data())
def test_any_truncation_fails(text: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(text) - 1))
    with pytest.raises(lp.InvalidLabel):
        lp.parse_and_verify(text[:cut], PUBLIC)
    with pytest.raises(lp.InvalidLabel):
        lp.parse_and_verify(text[len(text) - cut :] if cut else "", PUBLIC)


@settings(max_examples=100)
@given(kind=kinds, item=item_ids, coi=coi_ids, expiry=expiries)
def test_a_signature_from_another_key_fails(kind, item, coi, expiry) -> None:
    forged = lp.sign(OTHER_KEY, kind, item, coi, expiry)
    with pytest.raises(lp.InvalidLabel) as info:
        lp.parse_and_verify(forged, PUBLIC)
    assert info.value.code == "bad_signature"
    # ... while the same content with the right key verifies, and several keys may verify.
    genuine = lp.sign(KEY, kind, item, coi, expiry)
    assert lp.parse_and_verify(genuine, [OTHER_KEY.public_key(), *PUBLIC]).text == genuine


@settings(max_examples=100)
@given(subject=asset_subjects, expiry=expiries, serial=st.integers(1, lp.MAX_SERIAL))
def test_an_asset_signature_from_another_key_fails(subject, expiry, serial) -> None:
    forged = lp.sign(OTHER_KEY, subject[0], subject[1], lp.NO_COI, expiry, serial)
    with pytest.raises(lp.InvalidLabel) as info:
        lp.parse_and_verify(forged, PUBLIC)
    assert info.value.code == "bad_signature"


@settings(max_examples=100)
@given(text=payloads, other=payloads)
def test_signatures_are_not_transplantable(text: str, other: str) -> None:
    """A genuine signature copied onto other content never verifies."""
    head, _ = text.rsplit(":", 1)
    _, signature = other.rsplit(":", 1)
    if head == other.rsplit(":", 1)[0]:
        return
    with pytest.raises(lp.InvalidLabel):
        lp.parse_and_verify(f"{head}:{signature}", PUBLIC)


@given(raw=st.text(max_size=300))
def test_parsing_random_text_never_raises_anything_but_invalid_label(raw: str) -> None:
    try:
        lp.parse_and_verify(raw, PUBLIC)
    except lp.InvalidLabel as exc:
        assert exc.code in ("malformed", "bad_signature")
    else:  # pragma: no cover - a random string that verifies would be a forgery
        pytest.fail(f"random text verified: {raw!r}")


def test_non_canonical_last_base32_character_fails() -> None:
    """64 bytes use only 2 of the 5 bits of the last base32 character: a lax decoder
    would accept 8 spellings of one signature. Only the canonical one verifies."""
    text = lp.sign(KEY, "FP", "ITM-ABCDEFGH", "A999926000001*", None)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    last = alphabet.index(text[-1])
    for low_bits in range(1, 8):
        twin = alphabet[last ^ low_bits]
        with pytest.raises(lp.InvalidLabel) as info:
            lp.parse_and_verify(text[:-1] + twin, PUBLIC)
        assert info.value.code == "bad_signature"
