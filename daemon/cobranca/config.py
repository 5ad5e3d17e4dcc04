"""The configuration finance and sysadmins write, as one typed, frozen schema.

The pydantic models below are the single source of truth: they validate ``cobranca.yaml``,
their field descriptions document it (``cobranca config reference`` prints them), and every
error is reported as ``file:line:column: key: what to change``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator
from datetime import date, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .businessdays import BusinessCalendar, SendPolicy, SendWindow
from .charges import ChargeRules, InterestFormula
from .cron import CronError, parse_cron
from .pix import PixError, PixReceiver, merchant_city, merchant_name, pix_key, pix_receiver
from .taxid import valid_cnpj
from .yamlfile import YamlDocument, YamlError, load_yaml

DEFAULT_CONFIG_PATHS = (Path("/etc/cobranca/cobranca.yaml"), Path("config/cobranca.yaml"))
CONFIG_ENV = "COBRANCA_CONFIG"
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
MAX_DAYS = 36_500  # a century either way: wider windows are typos, and overflow dates


class ConfigError(Exception):
    """Every problem found in a config file, each naming file, line and key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _base_dir(info: ValidationInfo) -> Path:
    return (info.context or {}).get("base_dir", Path.cwd())


def _resolve(path: Path, info: ValidationInfo) -> Path:
    return path if path.is_absolute() else (_base_dir(info) / path).resolve()


class Secret(Model):
    """Where a password comes from: never the YAML itself."""

    password_env: str | None = Field(
        None, description="Name of the environment variable that holds the password."
    )
    password_file: Path | None = Field(
        None,
        description="File that holds the password (e.g. a systemd credential); "
        "relative paths resolve against the config file's folder.",
    )

    @field_validator("password_file")
    @classmethod
    def _resolve_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info) if value else None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if self.password_env and self.password_file:
            raise ValueError("give either password_env or password_file, not both")
        return self

    @property
    def has_password(self) -> bool:
        return bool(self.password_env or self.password_file)

    def password(self) -> str | None:
        """Read the password now (at use, not at load), naming where it was looked for."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError([f"environment variable {self.password_env} is not set"])
            return value
        if self.password_file:
            try:
                return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(
                    [f"cannot read password file {self.password_file}: {exc.strerror}"]
                ) from exc
        return None


class Database(Secret):
    url: str = Field(
        description="SQLAlchemy URL without the password, e.g. "
        "postgresql+psycopg://cobranca@db.example/protheus or sqlite:///protheus.db. "
        "Relative SQLite paths resolve against the config file's folder."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            # The driver's message may quote the URL, password included: say it in our words.
            raise ValueError(
                "not a database URL of the form dialect+driver://user@host:port/database "
                "(is the port a number?)"
            ) from None
        if url.password or _query_secret(url):
            raise ValueError(
                "the URL contains a password; remove it and use password_env or password_file"
            )
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            database = Path(url.database)
            if not database.is_absolute():
                url = url.set(database=str(_resolve(database, info)))
                return url.render_as_string(hide_password=False)
        return value

    def engine_url(self) -> URL:
        url = make_url(self.url)
        password = self.password()
        return url.set(password=password) if password is not None else url

    @property
    def sqlite_file(self) -> Path | None:
        """The database file when the URL is SQLite on disk (its folder may need creating)."""
        url = make_url(self.url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(url.database)
        return None

    @property
    def display_url(self) -> str:
        """The URL as it may appear in logs and errors."""
        return make_url(self.url).render_as_string(hide_password=True)


class Source(Database):
    """The Protheus database (read only)."""

    company: str = Field(
        "01", description="Company code (empresa): company 01 reads tables SE1010 and SA1010."
    )
    table_schema: str | None = Field(
        None, description="Database schema of the Protheus tables (e.g. dbo), if not the default."
    )
    customers_shared: StrictBool = Field(
        True,
        description="SA1 is shared between branches (blank A1_FILIAL). Set false when SA1 is "
        "exclusive, so each título's customer is read from its own branch. While true, a run "
        "warns if SA1 has customers in a branch (they would get no letter).",
    )
    fetch_size: int = Field(1000, ge=10, le=100_000, description="Rows fetched per round trip.")
    collectible_types: tuple[str, ...] = Field(
        ("NF", "DP", "BOL", "FT", "DUP", "CH", "NP", "RC", "CC", "CD", "FI", "NDC", "JR", "CTR"),
        description="Título types (E1_TIPO) this installation collects; any other type is "
        "skipped and reported, so a new type is noticed instead of silently mailed.",
    )

    @field_validator("collectible_types", mode="before")
    @classmethod
    def _types(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(str(v).strip() for v in value)
        return value

    @field_validator("company", mode="before")
    @classmethod
    def _company(cls, value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Za-z]{2}", value):
            raise ValueError("company is two letters or digits, e.g. '01' (quote it)")
        return value


class History(Database):
    """Where every run and letter is recorded."""

    retention_days: int = Field(
        1826,
        ge=30,
        description="`cobranca purge` deletes records older than this (LGPD: keep "
        "no longer than needed; 5 years is the usual period for collection records).",
    )

    url: str = Field(
        "sqlite:///../var/history.db",
        description="SQLAlchemy URL of the history store; SQLite by default, PostgreSQL for "
        "several daemons.",
    )


class Smtp(Secret):
    host: str = Field(description="SMTP server host name.")
    port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="starttls (port 587), tls (implicit TLS, port 465) or none (local relay only).",
    )
    username: str | None = Field(None, description="Login user; omit for a relay without login.")
    ca_file: Path | None = Field(
        None,
        description="PEM file of the CA that signed the server's certificate, for a server "
        "with an internal CA; by default the system's trusted CAs verify it.",
    )
    timeout_seconds: float = Field(30, gt=0, le=600, description="Timeout per SMTP command.")

    @field_validator("ca_file")
    @classmethod
    def _resolve_ca(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _resolve(value, info) if value else None

    @model_validator(mode="after")
    def _login_needs_password(self) -> Smtp:
        if self.username and not self.has_password:
            raise ValueError("username is set: give password_env or password_file too")
        return self


class Outbox(Model):
    directory: Path = Field(
        Path("../var/outbox"),
        description="Folder where each letter is written as an .eml file.",
    )
    batch_size: int = Field(
        200,
        ge=1,
        le=1000,
        description="Letters written, synced to disk and recorded together: one filesystem "
        "sync and one history transaction per batch. After a crash each of them is confirmed "
        "from its file, so none is left in doubt.",
    )

    @field_validator("directory")
    @classmethod
    def _resolve_dir(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)


class Delivery(Model):
    transport: Literal["outbox", "smtp"] = Field(
        "outbox", description="outbox writes .eml files; smtp sends them."
    )
    from_address: str = Field(description="Sender address of every letter.")
    from_name: str = Field("", description="Sender display name.")
    reply_to: str | None = Field(None, description="Where customers' replies go.")
    smtp: Smtp | None = Field(None, description="SMTP server settings (transport smtp).")
    retry_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="Tries per letter within a run for a temporary failure "
        "(SMTP 4xx, connection lost before the message data); then it waits for the next run.",
    )
    retry_backoff_seconds: float = Field(
        2.0, ge=0, le=300, description="Wait before the 2nd try; doubled for each further try."
    )
    rate_per_minute: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="At most this many letters a minute (providers such as Microsoft 365 and "
        "Gmail refuse bursts); omit: no limit.",
    )
    max_letters_per_run: int | None = Field(
        None,
        ge=1,
        description="Stop a layout's run after this many letters; the rest stay "
        "planned for the next run. Omit: no limit.",
    )
    claim_timeout_seconds: int = Field(
        900,
        ge=60,
        description="A letter left 'sending' this long by a process on another "
        "host is taken as interrupted (marked ambiguous). On the same host a dead process is "
        "detected at once.",
    )
    # Defaults are validated like written values, so their relative paths resolve the same way.
    outbox: Outbox = Field(
        default_factory=dict,  # type: ignore[arg-type]
        description="Outbox settings (transport outbox).",
    )

    @field_validator("from_address", "reply_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.fullmatch(value):
            raise ValueError(f"not an e-mail address: {value!r}")
        return value

    @field_validator("from_name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return _one_plain_line(value)  # the From header's display name

    @model_validator(mode="after")
    def _transport_settings(self) -> Delivery:
        if self.transport == "smtp" and self.smtp is None:
            raise ValueError("transport is smtp: add an smtp section with at least host")
        return self


class DaemonSettings(Model):
    """How the scheduler catches up and retries."""

    retry_minutes: int = Field(
        15,
        ge=1,
        le=720,
        description="After a run that could not reach a database, try again "
        "this many minutes later.",
    )
    retry_limit: int = Field(
        8, ge=0, le=100, description="Retries of one layout's scheduled run on the same day."
    )
    alert_email: str | None = Field(
        None,
        description="Operator address told by e-mail (through the delivery settings) "
        "when a scheduled run is missed or fails, or when it (or this daemon's share of "
        "another daemon's run) leaves failed or ambiguous letters.",
    )
    catch_up: StrictBool = Field(
        True,
        description="At start, run today's slot of a layout whose time has passed and "
        "that has not run yet (once: days missed while down are not sent again).",
    )

    @field_validator("alert_email")
    @classmethod
    def _alert_address(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.fullmatch(value):
            raise ValueError(f"not an e-mail address: {value!r}")
        return value


class ResponseSettings(Model):
    """How customers' responses (recorded with `cobranca response add`) hold letters back."""

    promise_grace_days: int = Field(
        3,
        ge=0,
        le=60,
        description="Days after a promised payment date before the promise "
        "counts as broken and letters resume.",
    )


def _pix_checked(check: Callable[[str], str], value: str) -> str:
    """Keep what finance wrote (it is shown back to them); refuse what no BR Code can carry."""
    try:
        check(value)
    except PixError as exc:
        raise ValueError(str(exc)) from None
    return value


class PixSettings(Model):
    """The creditor's Pix key and the receiver data a static BR Code carries."""

    key: str = Field(
        description="Pix key: CNPJ, CPF, e-mail, phone as +55DDDNUMBER, or a random key (UUID)."
    )
    merchant_name: str = Field(
        description="Receiver name in the code: at most 25 characters; accents are removed "
        "(the BR Code is ASCII only)."
    )
    merchant_city: str = Field(
        description="Receiver city in the code: at most 15 characters, accents removed."
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return _pix_checked(pix_key, value)

    @field_validator("merchant_name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _pix_checked(merchant_name, value)

    @field_validator("merchant_city")
    @classmethod
    def _city(cls, value: str) -> str:
        return _pix_checked(merchant_city, value)

    @property
    def receiver(self) -> PixReceiver:
        return pix_receiver(self.key, self.merchant_name, self.merchant_city)


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _one_plain_line(value: str) -> str:
    """A text printed as one line (a letter's header, the sender's name): a line break or a
    control character would break the letter's layout or the header (a quoted YAML string
    such as "Credora\\rLtda" holds one)."""
    if _CONTROL_CHARACTER.search(value):
        raise ValueError(
            "must be one line without control characters (remove the line break, tab "
            f"or escape such as \\r or \\n): {value!r}"
        )
    return value


class Creditor(Model):
    """The company sending the letters; CDC art. 42-A requires name, address and CNPJ."""

    name: str = Field(description="Legal name (razão social).")
    tax_id: str = Field(description="CNPJ; punctuation optional, alphanumeric CNPJs accepted.")
    address: str = Field(description="Street address, number and district.")
    city: str = Field(description="City; also the place in the letter's date line.")
    state: str = Field(description="State (UF).")
    zip_code: str = Field("", description="CEP.")
    phone: str = Field("", description="Phone customers may call about the letter.")
    email: str = Field("", description="E-mail customers may write to about the letter.")
    website: str = Field("", description="Web site, if any.")
    pix: PixSettings | None = Field(
        None, description="Pix receiver data, needed by layouts that offer Pix (payment.pix)."
    )

    @field_validator("name", "address", "city", "state", "zip_code", "phone", "email", "website")
    @classmethod
    def _plain_lines(cls, value: str) -> str:
        return _one_plain_line(value)  # printed in every letter's header and plain text

    @field_validator("tax_id")
    @classmethod
    def _tax_id(cls, value: str) -> str:
        cleaned = re.sub(r"[./-]", "", value).upper()
        if not re.fullmatch(r"[0-9A-Z]{12}[0-9]{2}", cleaned):
            raise ValueError("CNPJ must have 14 characters (punctuation is ignored)")
        if not valid_cnpj(cleaned):
            raise ValueError(f"CNPJ {value} has wrong check digits: check for a mistyped digit")
        return cleaned


class DaysRange(Model):
    min: int | None = Field(
        None,
        ge=-MAX_DAYS,
        le=MAX_DAYS,
        description="Fewest days after the real due date (negative: before due).",
    )
    max: int | None = Field(
        None,
        ge=-MAX_DAYS,
        le=MAX_DAYS,
        description="Most days after the real due date; omit: no limit.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> DaysRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class IncludeExclude(Model):
    include: tuple[str, ...] = Field((), description="Only these (empty: all).")
    exclude: tuple[str, ...] = Field((), description="Never these.")

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(str(v).strip() for v in value)
        return value


class CustomerFilter(IncludeExclude):
    """Customers as CODE (every store) or CODE/STORE."""

    @field_validator("include", "exclude")
    @classmethod
    def _customer_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not re.fullmatch(r"[^/\s]+(/[^/\s]+)?", item):
                raise ValueError(f"{item!r} is not CODE or CODE/STORE")
        return value


class Selection(Model):
    """Which títulos a layout picks (filtered in SQL wherever possible)."""

    days: DaysRange = Field(description="Days relative to the real due date (E1_VENCREA).")
    min_balance: Decimal = Field(
        Decimal("0.01"), ge=0, description="Smallest open balance (after abatements) per título."
    )
    branches: tuple[str, ...] = Field((), description="Branches (filiais); empty: all.")
    types: IncludeExclude = Field(
        IncludeExclude(),
        description="Título types (NF, DP, BOL...); RA, PR, NCC and "
        "abatements are never collected.",
    )
    situations: tuple[str, ...] = Field(
        ("0", "1"),
        description="Collection situations (E1_SITUACA) taken; lawyer, court and notary "
        "situations should stay out of friendly letters.",
    )
    customers: CustomerFilter = Field(CustomerFilter(), description="Customers to include/exclude.")
    skip_blocked: StrictBool = Field(
        True, description="Leave out blocked customers (A1_MSBLQL = 1)."
    )

    @field_validator("min_balance", mode="before")
    @classmethod
    def _no_float(cls, value: Any) -> Any:
        return str(value) if isinstance(value, float | int) else value

    @field_validator("branches", "situations", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(str(v).strip() for v in value)
        return value


class LateCharges(Model):
    """How a letter brings each título up to its date: fine, interest and TOTAL (FINR811A).

    Interest comes from the título (E1_PORCJUR, else E1_VALJUR) as Protheus computes it; the
    rate here applies only to títulos that carry none.
    """

    fine_percent: Decimal = Field(
        Decimal("0"),
        ge=0,
        le=100,
        description="Late fine (multa), % of the balance once late. Consumers (A1_PESSOA = F) "
        "are charged at most 2% (CDC art. 52 §1º) whatever is set here.",
    )
    interest_percent_per_month: Decimal | None = Field(
        None,
        ge=0,
        le=100,
        description="Interest for títulos without a rate of their own, % a month (per day: "
        "/30, 4 places, as E1_PORCJUR stores it). Without a contractual rate the legal one "
        "(Selic minus IPCA, Lei 14.905/2024) changes monthly: keep it up to date here.",
    )
    interest_formula: InterestFormula = Field(
        InterestFormula.SIMPLE,
        description="As MV_JURTIPO: simple, compound, or mixed (simple up to 30 days late, "
        "compound after).",
    )

    @field_validator("fine_percent", "interest_percent_per_month", mode="before")
    @classmethod
    def _no_float(cls, value: Any) -> Any:
        return str(value) if isinstance(value, float | int) else value

    @property
    def rules(self) -> ChargeRules:
        return ChargeRules(
            fine_percent=self.fine_percent,
            interest_formula=self.interest_formula,
            interest_percent_per_month=self.interest_percent_per_month,
        )


class PaymentOptions(Model):
    """Ways to pay that the letter offers."""

    boleto: StrictBool = Field(
        True,
        description="Print each título's boleto typeable line (E1_CODDIG, else E1_CODBAR) when "
        "its check digits are right; a wrong one is reported and left out.",
    )
    pix: StrictBool = Field(
        False,
        description="A Pix copia-e-cola code and QR code for the letter's total (needs "
        "creditor.pix).",
    )


class Layout(Model):
    """One letter of the collection ladder: what it selects, when it runs, what it says."""

    name: str = Field(description="Short unique name (lower case, digits, - and _).")
    description: str = Field("", description="Free text for people reading the config.")
    enabled: StrictBool = Field(
        True, description="false: the daemon does not schedule this layout."
    )
    schedule: str = Field(
        description="Cron expression (minute hour day month weekday) in the configured time "
        "zone; weekdays 0/7 = Sunday or names (mon-fri)."
    )
    template: str = Field(description="Template name: TEMPLATE.html.j2 and TEMPLATE.txt.j2.")
    subject: str = Field(description="E-mail subject; a Jinja2 template with the letter's data.")
    selection: Selection
    cadence_days: int = Field(
        7, ge=1, description="Days before the same customer may get this layout again."
    )
    attach_pdf: StrictBool = Field(
        False,
        description="Attach the letter as a PDF too (the printed letter), for customers whose "
        "accounts-payable department files letters.",
    )
    charges: LateCharges = Field(
        LateCharges(), description="Late charges shown per título and in the letter's total."
    )
    payment: PaymentOptions = Field(PaymentOptions(), description="Ways to pay in the letter.")

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("use lower-case letters, digits, '-' and '_' (e.g. primeiro-aviso)")
        return value


class SendWindowSettings(Model):
    """Hours of the day letters may leave (CDC art. 71: not at the debtor's rest time)."""

    start: time = Field(time(8, 0), description="First minute letters may leave, e.g. '08:00'.")
    end: time = Field(time(18, 0), description="Letters stop leaving at this time, e.g. '18:00'.")

    @model_validator(mode="after")
    def _ordered(self) -> SendWindowSettings:
        if self.start >= self.end:
            raise ValueError(f"start ({self.start:%H:%M}) must be before end ({self.end:%H:%M})")
        return self


class CalendarSettings(Model):
    """When letters may leave: business days and the send window.

    A layout whose time falls on a weekend or holiday runs once on the next business day; a
    time outside the window moves to the window's start.
    """

    business_days_only: StrictBool = Field(
        True,
        description="No letters on Saturdays, Sundays and holidays (national, the state's, "
        "Carnival Monday and Tuesday, and extra_holidays).",
    )
    state: str | None = Field(None, description="UF whose holidays count; default: creditor.state.")
    carnival: StrictBool = Field(
        True, description="Carnival Monday and Tuesday are holidays (banks close)."
    )
    extra_holidays: tuple[date, ...] = Field(
        (), description="More days off: municipal holidays, closures (YYYY-MM-DD)."
    )
    send_window: SendWindowSettings | None = Field(
        SendWindowSettings(), description="Hours letters may leave; null: any time of day."
    )

    @field_validator("state")
    @classmethod
    def _uf(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z]{2}", value):
            raise ValueError(f"{value!r} is not a state abbreviation (UF), e.g. SP")
        return value


class Config(Model):
    timezone: str = Field("America/Sao_Paulo", description="Time zone of schedules and dates.")
    templates_dir: Path = Field(Path("../templates"), description="Folder of the letter templates.")
    source: Source
    history: History = Field(default_factory=dict)  # type: ignore[arg-type]
    delivery: Delivery = Field(description="How letters leave: sender, transport and settings.")
    creditor: Creditor
    daemon: DaemonSettings = Field(default_factory=dict)  # type: ignore[arg-type]
    responses: ResponseSettings = Field(default_factory=dict)  # type: ignore[arg-type]
    calendar: CalendarSettings = Field(default_factory=dict)  # type: ignore[arg-type]
    layouts: tuple[Layout, ...] = Field(min_length=1)

    _path: Path | None = PrivateAttr(None)
    _digest: str = PrivateAttr("")
    _document: YamlDocument | None = PrivateAttr(None)

    @field_validator("templates_dir")
    @classmethod
    def _resolve_templates(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. America/Sao_Paulo)") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def send_policy(self) -> SendPolicy:
        """When letters may leave, for the scheduler and for every run."""
        settings = self.calendar
        window = settings.send_window
        return SendPolicy(
            calendar=BusinessCalendar(
                state=settings.state or self.creditor.state.strip().upper() or None,
                extra_holidays=frozenset(settings.extra_holidays),
                carnival=settings.carnival,
            ),
            business_days_only=settings.business_days_only,
            window=SendWindow(window.start, window.end) if window else None,
        )

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def digest(self) -> str:
        """SHA-256 of the config file as read: which rules selected a letter."""
        return self._digest

    def where(self, loc: tuple[str | int, ...]) -> str:
        """'file:line:col' of a key, for messages about a valid but unusable value."""
        return self._document.where(loc) if self._document else "config"

    def layout(self, name: str) -> Layout:
        for layout in self.layouts:
            if layout.name == name:
                return layout
        known = ", ".join(lay.name for lay in self.layouts)
        raise ConfigError([f"unknown layout {name!r}; the config has: {known}"])


def find_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """--config, then $COBRANCA_CONFIG, then /etc/cobranca/cobranca.yaml, then ./config/."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.exists():
            return candidate
    tried = ", ".join(str(p) for p in DEFAULT_CONFIG_PATHS)
    raise ConfigError([f"no config file found (tried ${CONFIG_ENV}, {tried}); use --config"])


def load_config(path: Path) -> Config:
    """Read, validate and resolve a config file, or raise ConfigError listing every problem."""
    import hashlib

    try:
        document = load_yaml(path)
    except YamlError as exc:
        raise ConfigError([str(exc)]) from exc
    if not isinstance(document.data, dict):
        raise ConfigError([f"{path}: the file must be a mapping of keys (source:, layouts:, ...)"])
    context = {"base_dir": path.resolve().parent}
    problems = list(_semantic_problems(document))
    try:
        config = Config.model_validate(document.data, context=context)
    except ValidationError as exc:
        raise ConfigError([*_describe(exc, document), *problems]) from exc
    if problems:
        raise ConfigError(problems)
    config._path = path.resolve()
    config._digest = hashlib.sha256(path.read_bytes()).hexdigest()
    config._document = document
    return config


def _semantic_problems(document: YamlDocument) -> Iterator[str]:
    """Checks the schema cannot express (schedules in the zone, unique layout names).

    They read the raw document, so they are reported together with schema errors instead of
    appearing only once those are fixed.
    """
    data = document.data
    try:
        zone = ZoneInfo(str(data.get("timezone", "America/Sao_Paulo")))
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("America/Sao_Paulo")  # the bad zone itself is a schema error
    layouts = data.get("layouts")
    if not isinstance(layouts, list):
        return
    seen: dict[str, int] = {}
    for index, layout in enumerate(layouts):
        if not isinstance(layout, dict):
            continue
        name = layout.get("name")
        if isinstance(name, str):
            if name in seen:
                yield (
                    f"{document.where(('layouts', index, 'name'))}: layouts[{index}].name: "
                    f"duplicate layout name {name!r} (first is layouts[{seen[name]}])"
                )
            seen.setdefault(name, index)
        payment = layout.get("payment")
        creditor = data.get("creditor")
        if (
            isinstance(payment, dict)
            and payment.get("pix") is True
            and isinstance(creditor, dict)
            and not creditor.get("pix")
        ):
            where = document.where(("layouts", index, "payment", "pix"))
            yield (
                f"{where}: layouts[{index}].payment.pix: the letter offers Pix but creditor.pix "
                "is missing: add creditor.pix with key, merchant_name and merchant_city"
            )
        schedule = layout.get("schedule")
        if isinstance(schedule, str):
            try:
                parse_cron(schedule, zone)
            except CronError as exc:
                where = document.where(("layouts", index, "schedule"))
                yield f"{where}: layouts[{index}].schedule: {exc}"


_FRIENDLY = {
    "missing": "required key is missing",
    "int_parsing": "must be a whole number, e.g. 15",
    "int_type": "must be a whole number, e.g. 15",
    "int_from_float": "must be a whole number, e.g. 15",
    "decimal_parsing": "write amounts with a dot and no thousands separator, e.g. 1234.50",
    "decimal_type": "write amounts with a dot and no thousands separator, e.g. 1234.50",
    "bool_type": "must be true or false",
    "string_type": "must be text (put it in quotes)",
}


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(exc: ValidationError, document: YamlDocument) -> Iterator[str]:
    for error in exc.errors(include_url=False):
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
        where = document.where(loc)
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            hint = ""
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                hint = f"; did you mean {close[0]!r}?"
            elif allowed:
                hint = f"; allowed keys here: {', '.join(allowed)}"
            yield f"{where}: {_dotted(loc)}: unknown key{hint}"
            continue
        message = _FRIENDLY.get(error["type"], error["msg"].removeprefix("Value error, "))
        shown = repr(_shown(error.get("input")))
        echoable = "input" in error and not isinstance(error["input"], dict | list)
        if echoable and shown not in message:
            message = f"{message} (got {shown})"
        yield f"{where}: {_dotted(loc)}: {message}"


def _shown(value: Any) -> Any:
    """A rejected value as it may be echoed: a URL loses its password first."""
    if isinstance(value, str) and "://" in value:
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            return "(a URL that could not be parsed)"
        if _query_secret(url):
            url = url.set(query={k: "***" if _secret_key(k, v) else v
                                 for k, v in url.query.items()})  # fmt: skip
        return url.render_as_string(hide_password=True)
    return value


_SECRET_KEYS = {"password", "passwd", "pwd"}


def _secret_key(key: str, value: Any) -> bool:
    text = " ".join(value) if isinstance(value, tuple) else str(value)
    return key.lower() in _SECRET_KEYS or (
        key.lower() == "odbc_connect" and re.search(r"(?i)\bpwd\s*=", text) is not None
    )


def _query_secret(url: URL) -> bool:
    """A password may also hide in the query string (?password=, an ODBC string's PWD=)."""
    return any(_secret_key(key, value) for key, value in url.query.items())


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The field names valid at a location, for 'did you mean' hints."""
    annotation: Any = Config
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            args = get_args(annotation)
            annotation = args[0] if args else None
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            annotation = field.annotation if field else None
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """Optional[X] → X."""
    if get_origin(annotation) is not None and type(None) in get_args(annotation):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation
