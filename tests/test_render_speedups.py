"""The render shortcuts (bench/) decide as Jinja's sandbox and filters do, only faster."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, unsafe

from cobranca.render import make_environment


@pytest.fixture
def env(tmp_path: Path) -> ImmutableSandboxedEnvironment:
    return make_environment(tmp_path)


def render(env: ImmutableSandboxedEnvironment, source: str, **context: object) -> str:
    return env.from_string(source).render(context)


def test_dict_keys_and_methods_read_as_in_jinja(env: ImmutableSandboxedEnvironment) -> None:
    customer = {"name": "Ana", "items": "a key named like a method"}
    assert render(env, "{{ c.name }}", c=customer) == "Ana"
    # Jinja prefers the attribute: "items" is the dict's method, not the key.
    assert render(env, "{{ c.items() | list | length }}", c=customer) == "2"
    assert render(env, "{{ c['items'] }}", c=customer) == "a key named like a method"
    with pytest.raises(jinja2.UndefinedError, match="no attribute 'missing'"):
        render(env, "{{ c.missing }}", c=customer)


class Account(dict):
    """A dict subclass with an attribute of its own: not the plain-dict shortcut."""

    owner = "attribute"


def test_dict_subclass_attribute_wins_over_key(env: ImmutableSandboxedEnvironment) -> None:
    assert render(env, "{{ a.owner }}", a=Account(owner="key")) == "attribute"


@pytest.mark.parametrize(
    "source",
    [
        "{{ c.clear() }}",
        "{{ c.update({'a': 1}) }}",
        "{{ c.pop('name') }}",
        "{{ rows.append(1) }}",
        "{{ rows.append(2) }}",  # twice: a remembered decision is the same decision
    ],
)
def test_mutating_methods_stay_unsafe(env: ImmutableSandboxedEnvironment, source: str) -> None:
    with pytest.raises(SecurityError):
        render(env, source, c={"name": "Ana"}, rows=[])


@pytest.mark.parametrize(
    "source",
    [
        "{{ c.__class__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ f.__globals__ }}",
        "{{ f.__code__ }}",
        "{{ c._private }}",
    ],
)
def test_internal_attributes_stay_hidden(env: ImmutableSandboxedEnvironment, source: str) -> None:
    def f() -> None:
        return None

    class Holder:
        _private = "secret"

    for _ in range(2):
        with pytest.raises((SecurityError, jinja2.UndefinedError)):
            render(env, source, c=Holder(), f=f)


def test_unsafe_callables_are_refused_and_macros_and_methods_run(
    env: ImmutableSandboxedEnvironment,
) -> None:
    @unsafe
    def danger() -> str:
        return "ran"

    def alters() -> str:
        return "ran"

    alters.alters_data = True  # type: ignore[attr-defined]
    for function in (danger, alters):
        with pytest.raises(SecurityError):
            render(env, "{{ f() }}", f=function)
    source = "{% macro m(x) %}<{{ x.strip().upper() }}>{% endmacro %}{{ m(' a ') }}"
    assert render(env, source) == "<A>"


def test_str_format_stays_sandboxed(env: ImmutableSandboxedEnvironment) -> None:
    with pytest.raises(SecurityError):
        render(env, "{{ '{0.__class__}'.format(c) }}", c={})


_WORDS = st.lists(
    st.sampled_from(
        ["a", "palavra", "muito-comprida-com-hifens", "x" * 90, "R$\xa01.234,56", "", "\u2003"]
    ),
    max_size=40,
)
_GAPS = st.sampled_from([" ", "  ", "\t", "\n", "\n\n", "\r\n", "\x0c", "\u2028", "\xa0"])


@given(_WORDS, _GAPS, st.sampled_from(["", " ", "\t", "\u2003", "\n"]), st.integers(1, 100))
def test_wordwrap_is_jinjas(words: list[str], gap: str, end: str, width: int) -> None:
    ours = make_environment(Path("."))
    theirs = jinja2.Environment()
    text = gap.join(words) + end
    for args in ("", ", break_long_words=false, break_on_hyphens=false", ", wrapstring='|'"):
        source = f"{{{{ t | wordwrap({width}{args}) }}}}"
        expected = theirs.from_string(source).render(t=text)
        assert ours.from_string(source).render(t=text) == expected
        assert ours.from_string(source).render(t=text) == expected  # remembered
