"""Header lines written without the email package are the lines it would write; body lines
encoded from a cache of lines are the lines binascii would write for the whole body."""

from __future__ import annotations

import binascii
import quopri
import string
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cobranca import mail
from cobranca.config import load_config
from cobranca.mail import (
    _folded_header,
    _header,
    _plain_header,
    build_message,
    new_message_id,
    quoted_printable,
)
from cobranca.models import RenderedLetter
from cobranca.render import qr_content_id

REPO = Path(__file__).resolve().parent.parent

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
ATOM = st.text(ATEXT, min_size=1, max_size=30)
DOT_ATOM = st.lists(ATOM, min_size=1, max_size=4).map(".".join)
ADDRESS = st.tuples(DOT_ATOM, DOT_ATOM).map("@".join)
# Near the fold: ids and lists around one line's 78 characters, and far beyond it.
LONG_ATOM = st.integers(1, 95).map(lambda n: "a" * n)
MESSAGE_ID = st.tuples(st.one_of(DOT_ATOM, LONG_ATOM), DOT_ATOM).map(lambda p: f"<{p[0]}@{p[1]}>")
ADDRESS_LIST = st.lists(st.one_of(ADDRESS, LONG_ATOM.map(lambda a: a + "@x.com")),
                        min_size=1, max_size=4).map(", ".join)  # fmt: skip


def _by_the_package(name: str, value: str) -> bytes:
    return _folded_header.__wrapped__(name, value, ())


@settings(max_examples=400, deadline=None)
@given(
    header=st.one_of(
        st.tuples(st.just("To"), ADDRESS_LIST),
        st.tuples(st.sampled_from(["Message-ID", "Content-ID"]), MESSAGE_ID),
        # Anything else those headers might be given goes to the package.
        st.tuples(st.sampled_from(["To", "Message-ID", "Content-ID"]), st.text(max_size=90)),
    )
)
def test_every_header_is_the_line_the_email_package_writes(header: tuple[str, str]) -> None:
    name, value = header
    try:
        expected = _by_the_package(name, value)
    except Exception as refused:
        # CR or LF (ValueError), or text the package cannot parse (HeaderParseError, even an
        # IndexError): ours refuses it the same way.
        with pytest.raises(type(refused)):
            _header(name, value)
        assert _plain_header(name, value) is None
        return
    assert _header(name, value) == expected


def test_a_letters_own_headers_skip_the_email_package() -> None:
    """What every letter writes takes the direct path, so the speed-up is really used."""
    delivery = load_config(REPO / "config" / "cobranca.yaml").delivery
    message_id = new_message_id(delivery)
    for name, value in (
        ("Message-ID", message_id),
        ("Content-ID", f"<{qr_content_id(message_id)}>"),
        ("To", "financeiro@cliente.example.com.br, contas.pagar@cliente.example.com.br"),
    ):
        plain = _plain_header(name, value)
        assert plain is not None, name
        assert plain == _by_the_package(name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("To", "a@example.com\r\nBcc: everyone@example.com"),
        ("Message-ID", "<x@example.com>\nBcc: everyone@example.com"),
        ("To", "Fulano <a@example.com>"),  # a display name: quoting is the package's job
    ],
)
def test_anything_but_the_plain_form_goes_to_the_package(name: str, value: str) -> None:
    assert _plain_header(name, value) is None


# Text near quoted-printable's edges: long lines, spaces and tabs before a line end, a lone
# dot, "=", non-ASCII, and every kind of line end.
BODY_TEXT = st.lists(
    st.one_of(
        st.sampled_from([" ", "\t", ".", "=", "\n", "\r", "\r\n", "ç", "€", "\x00", "x" * 40]),
        st.characters(codec="utf-8"),
    ),
    max_size=120,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=BODY_TEXT)
def test_body_lines_are_binasciis_and_decode_to_the_text(text: str) -> None:
    encoded = quoted_printable(text)
    unix = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\r" not in text:  # what binascii makes of the whole body at once
        whole = binascii.b2a_qp(unix.encode(), quotetabs=False, istext=True, header=False)
        assert encoded == whole.replace(b"\n", b"\r\n")
    assert encoded.replace(b"\r\n", b"").find(b"\r") == -1  # no bare CR ...
    assert b"\n" not in encoded.replace(b"\r\n", b"")  # ... nor bare LF
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    assert max(encoded, default=0) < 128
    assert quopri.decodestring(encoded.replace(b"\r\n", b"\n")).decode() == unix


def test_the_line_cache_is_bounded_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mail, "_QP_LINES_LIMIT", 5)
    monkeypatch.setattr(mail, "_QP_LINES", {})
    text = "\n".join(f"linha {n} com acentuação e um = no meio" for n in range(12))
    first, again = quoted_printable(text), quoted_printable(text)
    assert first == again
    assert len(mail._QP_LINES) <= 5
    expected = binascii.b2a_qp(text.encode(), quotetabs=False, istext=True, header=False)
    assert first == expected.replace(b"\n", b"\r\n")


def test_a_lone_cr_in_letter_text_never_reaches_the_message_bare() -> None:
    """A CR in the creditor's name (a quoted YAML string may hold one) ends a line instead."""
    delivery = load_config(REPO / "config" / "cobranca.yaml").delivery
    name = "Empresa Exemplo\rLtda"
    rendered = RenderedLetter(subject="Aviso", html=f"<p>{name}</p>\r", text=f"{name}\r\n.\r")
    message = build_message(
        rendered, ["a@example.com"], delivery, "<1@example.com>",
        datetime(2026, 12, 5, tzinfo=UTC), "primeiro-aviso",
    )  # fmt: skip
    lines = message.data.split(b"\r\n")
    assert not [line for line in lines if b"\r" in line or b"\n" in line]
    parsed = message_from_bytes(message.data, policy=policy.default)
    text, html = (
        part.get_content().replace("\r\n", "\n")
        for part in parsed.walk()
        if not part.is_multipart()
    )
    assert text == "Empresa Exemplo\nLtda\n.\n"
    assert html == "<p>Empresa Exemplo\nLtda</p>\n"
