"""The render shortcuts (bench/) decide as Jinja's sandbox and filters do, only faster."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, unsafe

from cobranca.render import _greedy_lines, make_environment, wordwrap


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


MACROS = (
    "{% macro show(x, label='') %}{{ label }}{{ x }}{% endmacro %}"
    "{% macro box() %}[{{ caller() }}]{% endmacro %}"
    "{% macro many() %}{{ varargs|join('+') }}{{ kwargs.get('sep', '') }}{% endmacro %}"
)
CALLS = (
    "{{ show(name) }}|{{ show(name, label='<i>') }}|"
    "{% for n in names %}{{ show(n) }}{{ loop.cycle(',', ';') }}{% endfor %}|"
    "{% call box() %}{{ name }}{% endcall %}|{{ many(name, '&', sep='/') }}|"
    "{% set words = name.split('>') %}{{ words|join(' ') }}"
)
DATA = {"name": "<b>Ana & Cia</b>", "names": ["<x>", "y", "&"]}


def _stock_sandbox(folder: Path) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2")),
        undefined=jinja2.StrictUndefined,
    )


@pytest.mark.parametrize("source", ["x.html.j2", "x.txt.j2"])
def test_macros_and_methods_render_as_in_jinjas_sandbox(tmp_path: Path, source: str) -> None:
    """Called directly, macros (in loops, with caller, varargs and keywords) and methods
    print what Jinja's own sandbox prints, escaped or not as their letter is."""
    (tmp_path / source).write_text(MACROS + CALLS, encoding="utf-8")
    ours = make_environment(tmp_path).get_template(source).render(DATA)
    assert ours == _stock_sandbox(tmp_path).get_template(source).render(DATA)
    assert ("<b>" in ours) is source.endswith(".txt.j2")


def test_a_plain_text_macro_in_an_html_letter_is_escaped(tmp_path: Path) -> None:
    """Jinja marks the output of a macro from a template that does not escape (a .j2 of
    textos/) safe when an HTML letter calls it: the customer's name would go in raw."""
    (tmp_path / "m.j2").write_text(MACROS, encoding="utf-8")
    (tmp_path / "x.html.j2").write_text(
        "{% from 'm.j2' import show, box, many %}" + CALLS, encoding="utf-8"
    )
    stock = _stock_sandbox(tmp_path).get_template("x.html.j2").render(DATA)
    assert stock.startswith("<b>Ana & Cia</b>|")  # the hole
    ours = make_environment(tmp_path).get_template("x.html.j2").render(DATA)
    assert ours.startswith("&lt;b&gt;Ana &amp; Cia&lt;/b&gt;|&lt;i&gt;&lt;b&gt;Ana")
    assert "<b>" not in ours and "<x>" not in ours and "<i>" not in ours


@pytest.mark.parametrize(
    ("tag", "line"),
    [
        ("{% include 'textos/aviso.j2' %}", "include"),
        ("{% include 'aviso.txt.j2' %}", "include"),
        ("{% include nome %}", "include"),
        ("{% extends 'textos/aviso.j2' %}", "extends"),
    ],
)
def test_an_html_letter_cannot_print_a_template_that_does_not_escape(
    tmp_path: Path, tag: str, line: str
) -> None:
    (tmp_path / "textos").mkdir()
    (tmp_path / "textos" / "aviso.j2").write_text("{{ name }}", encoding="utf-8")
    (tmp_path / "aviso.txt.j2").write_text("{{ name }}", encoding="utf-8")
    (tmp_path / "x.html.j2").write_text(f"<p>ok</p>\n{tag}\n", encoding="utf-8")
    env = make_environment(tmp_path)
    with pytest.raises(jinja2.TemplateSyntaxError, match=f"may only {line} templates") as error:
        env.get_template("x.html.j2").render(name="<script>", nome="aviso.txt.j2")
    assert error.value.lineno == 2
    # HTML includes HTML, and a text letter includes what it likes.
    (tmp_path / "parte.html.j2").write_text("<i>{{ name }}</i>", encoding="utf-8")
    (tmp_path / "y.html.j2").write_text("{% include 'parte.html.j2' %}", encoding="utf-8")
    assert env.get_template("y.html.j2").render(name="<s>") == "<i>&lt;s&gt;</i>"
    (tmp_path / "y.txt.j2").write_text("{% include 'textos/aviso.j2' %}", encoding="utf-8")
    assert env.get_template("y.txt.j2").render(name="<s>") == "<s>"


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


# Lines of words and single spaces, as letters wrap them: textwrap's lines made without it.
_PLAIN_LINES = st.lists(
    st.text(st.sampled_from("ae-x.,R$1\xa0\u2003é"), min_size=1, max_size=12), max_size=30
).map(" ".join)


@settings(max_examples=600, deadline=None)
@given(_PLAIN_LINES, st.integers(1, 40), st.booleans(), st.booleans())
def test_wordwrap_of_plain_lines_is_jinjas(
    text: str, width: int, break_long_words: bool, break_on_hyphens: bool
) -> None:
    env = jinja2.Environment()
    expected = jinja2.filters.do_wordwrap(env, text, width, break_long_words, "\n",
                                          break_on_hyphens)  # fmt: skip
    assert wordwrap(env, text, width, break_long_words, "\n", break_on_hyphens) == expected


def test_a_letters_paragraph_takes_the_direct_path() -> None:
    """What the letters wrap (quebra(): no hyphen breaks) is wrapped without textwrap."""
    paragraph = (
        "No aplicativo do seu banco, escolha pagar com Pix copia e cola e cole o código "
        "abaixo (copie a linha inteira). O valor de R$\xa01.234,56 já vem preenchido."
    )
    lines = _greedy_lines(paragraph, 78, False)
    assert lines is not None
    assert lines == textwrap.wrap(paragraph, 78, break_on_hyphens=False)
