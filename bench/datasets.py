"""Protheus-shaped benchmark databases (SE1/SA1) per size and backend, generated once and reused.

The rows come from `cobranca.demo.write_demo_database` (types, branches, situations, deleted
rows, abatements, ~5 títulos per store, some customers with two stores). On top of it this
module adds what a real Protheus database has and the demo leaves out: the SIX indexes DBAccess
creates (SE1 orders 1, 2 and 7, SA1 order 1, each ending in R_E_C_N_O_ and D_E_L_E_T_) and fresh
planner statistics. Without them the source's correlated abatement sub-select scans SE1 once
per row (quadratic: hours at 100k títulos), which is not what a Protheus installation sees.

A database is reused while its `bench_meta` row matches the generation parameters and the
sources of demo.py/protheus.py; otherwise it is written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import Index, MetaData, create_engine, func, inspect, select, text
from sqlalchemy.engine import Engine, make_url

import cobranca.demo
import cobranca.protheus
from cobranca.demo import write_demo_database
from cobranca.protheus import DELETED, sa1_table, se1_table

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
AS_OF = date(2026, 12, 4)  # a Friday, as in the tests; the demo's dates are relative to it
SEED = 7
COMPANY = "01"
# Live SE1 rows with E1_SALDO > 0 per customer that the demo writes (seed 7): 104,198 for
# 20,000 customers. Used to pick the customer count for a target number of open títulos.
OPEN_TITLES_PER_CUSTOMER = 5.21
MAX_CUSTOMERS = 999_999  # A1_COD has 6 digits
PG_ADMIN_URL = os.environ.get(
    "BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

Log = Callable[[str], None]


def parse_size(label: str) -> int:
    """'100k' → 100_000, '1m' → 1_000_000, '2500' → 2500 (target open títulos)."""
    text_ = label.strip().lower().replace("_", "")
    factor = 1
    if text_.endswith("k"):
        factor, text_ = 1_000, text_[:-1]
    elif text_.endswith("m"):
        factor, text_ = 1_000_000, text_[:-1]
    try:
        value = float(text_) * factor
    except ValueError:
        raise ValueError(f"size {label!r} is not like 10k, 100k or 1m") from None
    if value < 10:
        raise ValueError(f"size {label!r} is too small")
    return int(value)


def customers_for(target_titles: int) -> int:
    return min(MAX_CUSTOMERS, max(1, round(target_titles / OPEN_TITLES_PER_CUSTOMER)))


@dataclass
class Dataset:
    backend: str  # sqlite | postgresql
    label: str  # 100k, 1m, ...
    url: str
    customers: int
    se1_rows: int
    sa1_rows: int
    open_titles: int  # live SE1 rows with E1_SALDO > 0 (any type, abatements included)
    collectible_open: int  # the same without abatements and never-collected types
    overdue_open: int  # collectible_open due before as_of
    generated_seconds: float | None  # None: reused from an earlier run
    reused: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _fingerprint(customers: int) -> str:
    digest = hashlib.sha256()
    for module in (cobranca.demo, cobranca.protheus):
        digest.update(Path(module.__file__ or "").read_bytes())
    digest.update(f"{customers}|{SEED}|{AS_OF.isoformat()}|{COMPANY}|indexes-v1".encode())
    return digest.hexdigest()


def sqlite_url(label: str) -> str:
    return f"sqlite:///{DATA_DIR / f'protheus-{label}.db'}"


def pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"


def pg_admin() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def pg_create_database(name: str, *, replace: bool = False) -> str:
    admin = pg_admin()
    try:
        with admin.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            )
            if exists and replace:
                connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
                exists = None
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return pg_url(name)


def pg_drop_database(name: str) -> None:
    admin = pg_admin()
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def pg_version() -> str:
    engine = create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as connection:
            return str(connection.scalar(text("SHOW server_version")))
    finally:
        engine.dispose()


def _read_meta(engine: Engine) -> dict[str, object] | None:
    if not inspect(engine).has_table("bench_meta"):
        return None
    with engine.connect() as connection:
        value = connection.scalar(text("SELECT value FROM bench_meta WHERE name = 'dataset'"))
    return json.loads(value) if value else None


def _write_meta(engine: Engine, meta: dict[str, object]) -> None:
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS bench_meta"))
        connection.execute(text("CREATE TABLE bench_meta (name VARCHAR(32), value TEXT)"))
        connection.execute(
            text("INSERT INTO bench_meta (name, value) VALUES ('dataset', :v)"),
            {"v": json.dumps(meta)},
        )


def protheus_indexes(engine: Engine) -> None:
    """The SIX indexes DBAccess keeps on SE1 and SA1 (orders 1, 2, 7 and 1), then statistics."""
    metadata = MetaData()
    se1 = se1_table(metadata, COMPANY)
    sa1 = sa1_table(metadata, COMPANY)
    c, a = se1.c, sa1.c
    tail_e = (c.R_E_C_N_O_, c.D_E_L_E_T_)
    tail_a = (a.R_E_C_N_O_, a.D_E_L_E_T_)
    indexes = [
        Index(
            f"{se1.name}1", c.E1_FILIAL, c.E1_PREFIXO, c.E1_NUM, c.E1_PARCELA, c.E1_TIPO, *tail_e
        ),
        Index(
            f"{se1.name}2",
            c.E1_FILIAL,
            c.E1_CLIENTE,
            c.E1_LOJA,
            c.E1_PREFIXO,
            c.E1_NUM,
            c.E1_PARCELA,
            c.E1_TIPO,
            *tail_e,
        ),
        Index(
            f"{se1.name}7",
            c.E1_FILIAL,
            c.E1_VENCREA,
            c.E1_NOMCLI,
            c.E1_PREFIXO,
            c.E1_NUM,
            c.E1_PARCELA,
            *tail_e,
        ),
        Index(f"{sa1.name}1", a.A1_FILIAL, a.A1_COD, a.A1_LOJA, *tail_a),
    ]
    for index in indexes:
        index.create(engine)
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))


def _counts(engine: Engine) -> dict[str, int]:
    from cobranca.protheus import ABATEMENT_TYPE_PATTERN, NEVER_COLLECTED_TYPES, format_date

    metadata = MetaData()
    se1 = se1_table(metadata, COMPANY)
    sa1 = sa1_table(metadata, COMPANY)
    c = se1.c
    live_open = [c.D_E_L_E_T_ != DELETED, c.E1_SALDO > 0]
    collectible = [
        *live_open,
        ~c.E1_TIPO.like(ABATEMENT_TYPE_PATTERN),
        func.rtrim(c.E1_TIPO).not_in(NEVER_COLLECTED_TYPES),
    ]
    count = func.count()
    with engine.connect() as connection:
        return {
            "se1_rows": connection.scalar(select(count).select_from(se1)) or 0,
            "sa1_rows": connection.scalar(select(count).select_from(sa1)) or 0,
            "open_titles": connection.scalar(select(count).where(*live_open)) or 0,
            "collectible_open": connection.scalar(select(count).where(*collectible)) or 0,
            "overdue_open": connection.scalar(
                select(count).where(*collectible, c.E1_VENCREA < format_date(AS_OF))
            )
            or 0,
        }


def _heartbeat(what: str, log: Log) -> Callable[[], None]:
    """Print how long `what` has been running every 30 s; call the result to stop."""
    done = threading.Event()
    start = time.perf_counter()

    def beat() -> None:
        while not done.wait(30):
            log(f"  ... {what}: {time.perf_counter() - start:.0f} s")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    return done.set


def ensure_dataset(backend: str, label: str, log: Log, *, regenerate: bool = False) -> Dataset:
    """The database for (backend, size), generated (with indexes) unless a matching one exists."""
    customers = customers_for(parse_size(label))
    fingerprint = _fingerprint(customers)
    if backend == "sqlite":
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        url = sqlite_url(label)
        path = Path(make_url(url).database or "")
        if regenerate and path.exists():
            path.unlink()
    elif backend == "postgresql":
        url = pg_create_database(f"cobranca_bench_{label}", replace=regenerate)
    else:
        raise ValueError(f"unknown backend {backend!r} (sqlite or postgresql)")

    engine = create_engine(url)
    try:
        meta = _read_meta(engine) if not regenerate else None
        if meta and meta.get("fingerprint") == fingerprint:
            counts = {k: int(meta[k]) for k in _COUNT_KEYS}  # type: ignore[call-overload]
            log(
                f"{backend} {label}: reusing {engine.url.render_as_string(hide_password=True)} "
                f"({customers:,} customers, {counts['open_titles']:,} open títulos)"
            )
            return Dataset(
                backend, label, url, customers, generated_seconds=None, reused=True, **counts
            )
        log(
            f"{backend} {label}: generating {customers:,} customers (~{parse_size(label):,} open "
            f"títulos) into {engine.url.render_as_string(hide_password=True)}"
        )
        engine.dispose()
        if backend == "sqlite" and path.exists():
            path.unlink()
        start = time.perf_counter()
        stop = _heartbeat(f"generating {backend} {label}", log)
        try:
            write_demo_database(url, customers=customers, seed=SEED, as_of=AS_OF, company=COMPANY)
            log(f"  rows written in {time.perf_counter() - start:.1f} s; indexing and analyzing")
            protheus_indexes(engine)
        finally:
            stop()
        counts = _counts(engine)
        seconds = time.perf_counter() - start
        _write_meta(engine, {"fingerprint": fingerprint, "customers": customers, **counts})
        log(
            f"  done in {seconds:.1f} s: {counts['se1_rows']:,} SE1 rows, "
            f"{counts['open_titles']:,} open títulos, {counts['overdue_open']:,} overdue "
            "collectible"
        )
        return Dataset(
            backend, label, url, customers, generated_seconds=seconds, reused=False, **counts
        )
    finally:
        engine.dispose()


_COUNT_KEYS = ("se1_rows", "sa1_rows", "open_titles", "collectible_open", "overdue_open")
