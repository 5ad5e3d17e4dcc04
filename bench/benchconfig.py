"""The cobranca config a benchmark run uses, written as YAML and read by `load_config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cobranca.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
EXAMPLE_CONFIG = REPO / "config" / "cobranca.yaml"

# One wide layout: every overdue título (1 day late or more) in carteira/cobrança simples, with
# the ladder's late charges, boleto lines and a Pix QR code: the heaviest letter the ladder sends.
WIDE_LAYOUT: dict[str, Any] = {
    "name": "bench-atraso",
    "description": "benchmark: every overdue título",
    "schedule": "0 9 * * mon-fri",
    "template": "primeiro-aviso",
    "subject": "Aviso de pagamento pendente – {{ creditor.name }}",
    "selection": {"days": {"min": 1}, "min_balance": 10.0, "situations": ["0", "1"]},
    "cadence_days": 15,
    "charges": {"fine_percent": 2, "interest_percent_per_month": 1, "interest_formula": "simple"},
    "payment": {"boleto": True, "pix": True},
}


def layouts(kind: str, *, pix: bool = True) -> list[dict[str, Any]]:
    """'wide' (WIDE_LAYOUT) or 'ladder' (the four layouts of config/cobranca.yaml)."""
    if kind == "wide":
        chosen = [dict(WIDE_LAYOUT)]
    elif kind == "ladder":
        chosen = [dict(lay) for lay in yaml.safe_load(EXAMPLE_CONFIG.read_text())["layouts"]]
    else:
        raise ValueError(f"unknown layout set {kind!r} (wide or ladder)")
    if not pix:
        for layout in chosen:
            layout["payment"] = {**layout.get("payment", {}), "pix": False}
    return chosen


def config_data(
    *,
    source_url: str,
    history_url: str,
    transport: str,
    outbox: Path | None = None,
    smtp_port: int | None = None,
    layout_kind: str = "wide",
    pix: bool = True,
    fetch_size: int = 1000,
    max_letters: int | None = None,
) -> dict[str, Any]:
    delivery: dict[str, Any] = {
        "transport": transport,
        "from_address": "cobranca@credora.example.com.br",
        "from_name": "Financeiro Credora",
        "reply_to": "financeiro@credora.example.com.br",
        "retry_backoff_seconds": 0,
    }
    if max_letters is not None:
        delivery["max_letters_per_run"] = max_letters
    if transport == "smtp":
        assert smtp_port is not None
        delivery["smtp"] = {
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "none",
            "timeout_seconds": 30,
        }
    else:
        assert outbox is not None
        delivery["outbox"] = {"directory": str(outbox)}
    return {
        "timezone": "America/Sao_Paulo",
        "templates_dir": str(TEMPLATES),
        "source": {
            "url": source_url,
            "company": "01",
            "customers_shared": True,
            "fetch_size": fetch_size,
        },
        "history": {"url": history_url},
        "delivery": delivery,
        "creditor": {
            "name": "Credora Indústria Ltda",
            "tax_id": "11444777000161",
            "address": "Avenida Paulista, 1000",
            "city": "São Paulo",
            "state": "SP",
            "zip_code": "01310100",
            "phone": "(11) 3000-0000",
            "email": "financeiro@credora.example.com.br",
            "pix": {
                "key": "11444777000161",
                "merchant_name": "CREDORA",
                "merchant_city": "SAO PAULO",
            },
        },
        # A benchmark runs at any hour: no business-day rule, no send window.
        "calendar": {"business_days_only": False, "send_window": None},
        "layouts": layouts(layout_kind, pix=pix),
    }


def write_config(path: Path, data: dict[str, Any]) -> Config:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_config(path)
