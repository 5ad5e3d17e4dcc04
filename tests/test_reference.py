"""The README's config reference is the schema's, so the two cannot drift apart."""

from __future__ import annotations

from cobranca.config import Config
from cobranca.reference import config_reference
from conftest import REPO


def test_readme_reference_matches_schema() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- config-reference:start -->\n") + len(
        "<!-- config-reference:start -->\n"
    )
    end = readme.index("<!-- config-reference:end -->")
    assert readme[start:end] == config_reference(), "run: cobranca config reference"


def test_reference_lists_every_field() -> None:
    reference = config_reference()
    for name in Config.model_fields:
        assert f"| `{name}` |" in reference
    for key in ("layouts[].selection.days.min", "delivery.smtp.password_env", "source.company"):
        assert f"| `{key}` |" in reference
