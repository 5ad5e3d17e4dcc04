"""Header lines written without the email package are the lines it would write."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cobranca.config import load_config
from cobranca.mail import _folded_header, _header, _plain_header, new_message_id
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
