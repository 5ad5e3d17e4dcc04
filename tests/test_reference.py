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


def test_generated_sample_config_loads_and_covers_every_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cobranca.config import load_config
    from cobranca.reference import sample_config

    text = sample_config()
    path = tmp_path / "cobranca.yaml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    assert [layout.name for layout in config.layouts] == ["primeiro-aviso"]
    assert config.delivery.transport == "outbox" and config.history.retention_days == 1826
    for line in config_reference().splitlines()[2:]:
        leaf = line.split("`")[1].split(".")[-1].removesuffix("[]")
        assert f"{leaf}:" in text, leaf


def test_email_addresses_are_masked_in_logs_but_message_ids_are_not() -> None:
    import logging

    from cobranca.logs import RedactAddresses

    record = logging.LogRecord("x", logging.INFO, "f", 1, "sent %s; refused %s", (
        "<17.2.cobranca@empresa.example>", "joao.silva@cliente.example"), None)  # fmt: skip
    RedactAddresses().filter(record)
    assert record.getMessage() == (
        "sent <17.2.cobranca@empresa.example>; refused j***@cliente.example"
    )
