"""A Protheus-shaped demo database: SA1 (clientes) and SE1 (títulos a receber) with traps.

Nobody can hand out a copy of a real ERP, yet the daemon, its docs and its tests need a database
that looks like one. `write_demo_database` drops and recreates SE1<company>0 and SA1<company>0 in
any SQLAlchemy URL (SQLite, PostgreSQL, ...) and fills them the way DBAccess stores data: every
CHAR space-padded to its width, dates as YYYYMMDD or 8 blanks, money in binary floats, no NULLs,
deleted rows kept with D_E_L_E_T_ = '*', unique increasing R_E_C_N_O_.

What is in it, and why:

* Customers "000001".., store "01" (every 10th also has a store "02"), companies (CNPJ) and ~15%
  persons (CPF), all with valid check digits; e-mails that are single, several with odd
  separators, empty or garbage, as finance teams really type them; about half with a complete
  billing address and a few with only A1_ENDCOB filled, so the fallback to the main address runs.
* Customer "000013" is hostile: HTML, quotes, "&" and CR/LF + "Bcc:" in its name, to prove the
  letters escape it and no header can be injected.
* ~5 títulos per store, due from as_of - 120 to as_of + 20 days, weekends moved to Monday in
  E1_VENCREA, some paid, some partly paid. Dates are relative to `as_of`, so the demo always has
  overdue títulos; the first customers guarantee one título due in exactly 3 days and one in each
  lateness band (1-15, 16-45, >45 days).
* Rows a correct reader must not send: never-collected types (RA, PR, NCC, TX), abatements (AB-,
  IR-) that share the key of an open título and reduce it, deleted rows in both tables (some are
  old versions of a live key), a few blank E1_BAIXA stored as "" instead of 8 spaces, and títulos
  with a lawyer / in court / in protest (E1_SITUACA 5, 6, F).

Everything comes from `random.Random(seed)` and `as_of`: the same arguments write the same rows,
byte for byte, and nothing reads the clock. Rows are generated lazily and inserted in batches, so
100k customers need no more memory than 40.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, create_engine
from sqlalchemy.engine import URL, make_url

from cobranca.boleto import barcode_to_line, mod11_barcode
from cobranca.protheus import DELETED, LIVE, format_date, sa1_table, se1_table
from cobranca.taxid import cnpj_check_digits, cpf_check_digits

__all__ = ["HOSTILE_CODE", "HOSTILE_NAME", "DemoSummary", "pad", "write_demo_database"]

BATCH_SIZE = 1000

HOSTILE_CODE = "000013"
DEMO_BANK = "001"
BOLETO_FACTOR_BASE = date(1997, 10, 7)  # FEBRABAN due factor: days since this date...
BOLETO_ROLLOVER = date(2025, 2, 22)  # ...restarting at 1000 on this day
# Fits A1_NOME (40) whole, so the injected "Bcc:" carries a complete address.
HOSTILE_NAME = '<b>Bar & "Zé"</b>\r\nBcc: x@evil.example'

# Due-date offsets from as_of (days) that the first customers always get: D-3, and one título in
# each lateness band 1-15, 16-45 and >45 days (weekend moves keep them inside their band).
COVERAGE_OFFSETS = (3, -8, -30, -80)

# Customer roles by index (1-based) modulo 20, so every 20 customers show each trap once.
ROLE_SA1_DELETED = 5  # an old, deleted version of the customer row
ROLE_NEVER_COLLECTED = 6  # RA, PR, NCC and TX títulos that look overdue and open
ROLE_ABATEMENT = 7  # AB- and IR- abatements on open títulos
ROLE_SE1_DELETED = 8  # a deleted título that would otherwise be overdue and open
ROLE_EMPTY_BAIXA = 9  # an open título whose blank E1_BAIXA is "" instead of 8 spaces

FIRST_NAMES = (
    "Maria", "José", "Ana", "João", "Antônio", "Francisca", "Carlos", "Paulo", "Lucas",
    "Juliana", "Fernanda", "Marcos", "Luiz", "Patrícia", "Rafael", "Aline", "Sebastião",
    "Conceição", "Raimundo", "Adriana",
)  # fmt: skip
SURNAMES = (
    "Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira", "Lima",
    "Gomes", "Costa", "Ribeiro", "Martins", "Carvalho", "Almeida", "Lopes", "Soares",
    "Fernandes", "Vieira", "Barbosa", "Araújo", "Nascimento", "Moreira", "Cavalcanti",
    "Gonçalves", "Teixeira",
)  # fmt: skip
BUSINESSES = (
    "Comercial", "Distribuidora", "Ferragens", "Padaria", "Supermercado", "Auto Peças",
    "Materiais de Construção", "Farmácia", "Açougue", "Confecções", "Transportadora",
    "Papelaria", "Mercearia", "Restaurante", "Oficina Mecânica", "Laticínios", "Madeireira",
    "Drogaria", "Serralheria", "Atacadão",
)  # fmt: skip
SAINTS = ("São Jorge", "Santa Luzia", "São João", "Santo Antônio", "Nossa Senhora", "Bom Jesus")
COMPANY_SUFFIXES = ("Ltda", "Ltda", "Ltda", "ME", "Ltda - ME", "EIRELI", "EPP", "S/A", "SLU")
MAILBOXES = ("financeiro", "financeiro", "cobranca", "contasapagar", "contato", "adm", "fiscal")
INVALID_EMAILS = (
    "nao tem",
    "contato@@{slug}.example",
    "financeiro@",
    "ver com {first}",
    "financeiro.{slug}.example",
)

# (city, state, CEP prefix range, districts)
CITIES = (
    ("São Paulo", "SP", (1000, 5999),
     ("Sé", "Bela Vista", "Pinheiros", "Moema", "Mooca", "Santana", "Lapa", "Brás", "Tatuapé")),
    ("Campinas", "SP", (13010, 13099),
     ("Cambuí", "Centro", "Taquaral", "Barão Geraldo", "Botafogo", "Jardim Chapadão")),
    ("Belo Horizonte", "MG", (30110, 31999),
     ("Savassi", "Funcionários", "Centro", "Pampulha", "Santa Efigênia", "Barro Preto")),
    ("Rio de Janeiro", "RJ", (20010, 23799),
     ("Centro", "Tijuca", "Botafogo", "Madureira", "Méier", "Campo Grande")),
    ("Curitiba", "PR", (80010, 82999), ("Centro", "Batel", "Água Verde", "Boqueirão", "Portão")),
    ("Porto Alegre", "RS", (90010, 91999),
     ("Centro Histórico", "Moinhos de Vento", "Menino Deus", "Partenon", "Navegantes")),
    ("Ribeirão Preto", "SP", (14010, 14099), ("Centro", "Jardim Sumaré", "Vila Tibério")),
    ("Salvador", "BA", (40010, 42599), ("Comércio", "Barra", "Pituba", "Liberdade")),
    ("Recife", "PE", (50010, 52999), ("Boa Vista", "Boa Viagem", "Santo Amaro", "Casa Amarela")),
    ("Goiânia", "GO", (74000, 74899), ("Setor Central", "Setor Bueno", "Setor Oeste")),
)  # fmt: skip
STREETS = (
    "Rua XV de Novembro", "Av. Brasil", "Rua Sete de Setembro", "Rua Dom Pedro II",
    "Av. Getúlio Vargas", "Rua Tiradentes", "Rua Marechal Deodoro", "Rua Santos Dumont",
    "Rua das Flores", "Rua Rui Barbosa", "Av. Presidente Vargas", "Rua Barão do Rio Branco",
    "Rua José Bonifácio", "Av. Independência", "Rua Padre Anchieta", "Rua Duque de Caxias",
    "Rua Voluntários da Pátria", "Av. dos Bandeirantes", "Travessa São José",
)  # fmt: skip
ADDRESS_COMPLEMENTS = ("", "", "", " - Sala 12", " - Galpão 3", " - Loja 2", " - Fundos")
HISTORIES = (
    "", "", "", "", "VENDA DE MERCADORIAS", "REF. PEDIDO {n}", "SERVICOS PRESTADOS",
    "CONF. CONTRATO {n}", "Pedido nº {n} – entrega & montagem",
)  # fmt: skip
SITUATIONS = ("0", "1", "5", "6", "F")
SITUATION_WEIGHTS = (45, 45, 3, 3, 4)
RISKS = ("A", "B", "C", "D", "E")
RISK_WEIGHTS = (30, 35, 20, 10, 5)
NEVER_COLLECTED = ("RA ", "PR ", "NCC", "TX ")

Row = dict[str, Any]


@dataclass(frozen=True)
class DemoSummary:
    """What was written, for the CLI to print and tests to check."""

    customers: int
    titles: int  # SE1 rows written, all kinds
    url: str  # with password hidden


def pad(value: str, width: int) -> str:
    """Space-pad (and truncate) to the column width, as DBAccess stores every CHAR field."""
    return value[:width].ljust(width)


def write_demo_database(
    url: str | URL,
    *,
    customers: int = 40,
    seed: int = 7,
    as_of: date,
    company: str = "01",
    schema: str | None = None,
) -> DemoSummary:
    """Drop, recreate and fill SE1/SA1 for `company` at `url`; deterministic in its arguments."""
    if not 1 <= customers <= 999_999:
        raise ValueError(
            f"customers must be between 1 and 999999 (A1_COD has 6 digits): {customers}"
        )
    if len(company) != 2 or not company.isalnum():
        raise ValueError(f"company must be 2 letters or digits, like '01': {company!r}")

    metadata = MetaData()
    se1 = se1_table(metadata, company, schema)
    sa1 = sa1_table(metadata, company, schema)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        metadata.drop_all(engine, tables=[se1, sa1])
        metadata.create_all(engine, tables=[se1, sa1])
        written = {sa1.name: 0, se1.name: 0}
        buffers: dict[str, list[Row]] = {sa1.name: [], se1.name: []}
        tables: dict[str, Table] = {sa1.name: sa1, se1.name: se1}
        gen = _Generator(random.Random(seed), as_of, customers)
        with engine.begin() as conn:
            for alias, row in gen.rows():
                name = sa1.name if alias == "SA1" else se1.name
                buffer = buffers[name]
                buffer.append(row)
                if len(buffer) >= BATCH_SIZE:
                    conn.execute(tables[name].insert(), buffer)
                    written[name] += len(buffer)
                    buffer.clear()
            for name, buffer in buffers.items():
                if buffer:
                    conn.execute(tables[name].insert(), buffer)
                    written[name] += len(buffer)
        return DemoSummary(
            customers=customers,
            titles=written[se1.name],
            url=make_url(url).render_as_string(hide_password=True),
        )
    finally:
        engine.dispose()


# --- check digits -------------------------------------------------------------------------------


# --- generation ---------------------------------------------------------------------------------


def _slug(text: str) -> str:
    """'Padaria São João' → 'padaria-sao-joao', for fake e-mail domains."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = "".join(c if c.isalnum() else " " for c in ascii_text.lower()).split()
    return "-".join(words)


def _real_due(due: date) -> date:
    """E1_VENCREA: a due date on Saturday or Sunday moves to the following Monday."""
    weekday = due.weekday()
    return due + timedelta(days=7 - weekday) if weekday >= 5 else due


@dataclass(frozen=True)
class _Address:
    street: str
    district: str
    city: str
    state: str
    zip_code: str


_BLANK_ADDRESS = _Address("", "", "", "", "")


@dataclass(frozen=True)
class _Customer:
    index: int
    code: str
    name: str
    short_name: str
    person: str  # "F" or "J"
    tax_root: str  # CPF base (9 digits) or CNPJ root (8 digits)
    emails: str
    address: _Address
    billing: _Address
    blocked: bool
    risk: str


@dataclass
class _Generator:
    """Walks customers in code order, yielding ("SA1" | "SE1", row) pairs from one Random."""

    rng: random.Random
    as_of: date
    customers: int
    sa1_recno: int = 0
    se1_recno: int = 0
    numbers: dict[str, int] = field(default_factory=dict)

    def rows(self) -> Iterator[tuple[str, Row]]:
        for index in range(1, self.customers + 1):
            customer = self._customer(index)
            stores = ["01", "02"] if index % 10 == 0 else ["01"]
            for store in stores:
                for row in self._sa1_rows(customer, store):
                    yield "SA1", row
            for store in stores:
                for row in self._se1_rows(customer, store):
                    yield "SE1", row

    # SA1 ---------------------------------------------------------------------------------------

    def _role(self, index: int) -> int:
        return index % 20

    def _forced_offsets(self, index: int) -> list[int]:
        """COVERAGE_OFFSETS spread over the first customers (all on customer 1 if it is alone)."""
        holders = min(self.customers, len(COVERAGE_OFFSETS))
        return [o for j, o in enumerate(COVERAGE_OFFSETS) if j % holders == index - 1]

    def _showcase(self, index: int) -> bool:
        """Customers that carry a guarantee or a trap: active, with one valid e-mail."""
        return (
            bool(self._forced_offsets(index))
            or f"{index:06d}" == HOSTILE_CODE
            or self._role(index) in (ROLE_NEVER_COLLECTED, ROLE_ABATEMENT, ROLE_SE1_DELETED,
                                     ROLE_EMPTY_BAIXA)
        )  # fmt: skip

    def _customer(self, index: int) -> _Customer:
        rng = self.rng
        code = f"{index:06d}"
        surname = rng.choice(SURNAMES)
        first = rng.choice(FIRST_NAMES)
        person = "F" if rng.random() < 0.15 else "J"
        if person == "F":
            name = _fit(40, f"{first} {rng.choice(SURNAMES)} {surname}", f"{first} {surname}")
            short_name = _fit(20, f"{first} {surname}", surname)
            domain_slug = "webmail"
            local = f"{_slug(first)}.{_slug(surname)}{rng.randint(1, 99)}"
            single = f"{local}@{domain_slug}.example"
            tax_root = self._cpf_base()
        else:
            business = rng.choice(BUSINESSES)
            suffix = rng.choice(COMPANY_SUFFIXES)
            pattern = rng.randrange(4)
            other = rng.choice(SURNAMES)
            saint = rng.choice(SAINTS)
            candidates = {
                0: f"{business} {surname} {suffix}",
                1: f"{business} {surname} & {other} {suffix}",
                2: f"{surname} & Filhos {business} {suffix}",
                3: f"{business} {saint} {suffix}",
            }
            name = _fit(40, candidates[pattern], f"{business} {surname} {suffix}",
                        f"{business} {surname}")  # fmt: skip
            trade = saint if pattern == 3 else surname
            short_name = _fit(20, f"{business} {trade}", trade)
            domain_slug = _slug(f"{business} {trade}")
            single = f"{rng.choice(MAILBOXES)}@{domain_slug}.example"
            tax_root = f"{rng.randint(1, 99_999_999):08d}"
        emails = self._emails(single, domain_slug, first)
        address = self._address()
        roll = rng.random()
        if roll < 0.5:
            billing = self._address()
        elif roll < 0.56:  # only the street: the letter must fall back to the main address
            billing = _Address(self._address().street, "", "", "", "")
        else:
            billing = _BLANK_ADDRESS
        blocked = rng.random() < 0.05
        risk = rng.choices(RISKS, RISK_WEIGHTS)[0]
        if code == HOSTILE_CODE:
            name, short_name = HOSTILE_NAME, HOSTILE_NAME[:17]
            emails = "financeiro@bar-do-ze.example"
        if self._showcase(index):
            blocked = False
            if code != HOSTILE_CODE:
                emails = single
        return _Customer(index, code, name, short_name, person, tax_root, emails, address,
                         billing, blocked, risk)  # fmt: skip

    def _cpf_base(self) -> str:
        while True:
            base = f"{self.rng.randint(1, 999_999_999):09d}"
            if len(set(base)) > 1:  # 111.111.111-11 and the like are invalid by rule
                return base

    def _emails(self, single: str, slug: str, first: str) -> str:
        """A1_EMAIL as people type it: mostly one, sometimes several, empty or garbage."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.10:
            return ""
        if roll < 0.13:
            return rng.choice(INVALID_EMAILS).format(slug=slug, first=first)
        if roll < 0.28:
            domain = single.split("@", 1)[1]
            boxes = rng.sample([b for b in MAILBOXES if b != "financeiro"], rng.randint(1, 2))
            addresses = [single] + [f"{b}@{domain}" for b in boxes]
            if rng.random() < 0.15:
                addresses.append(single)  # the same address twice
            text = addresses[0]
            for address in addresses[1:]:
                text += rng.choice(("; ", ";", " ;", " , ", ",", ", ", " ,")) + address
            return text + (";" if rng.random() < 0.1 else "")
        return single

    def _address(self) -> _Address:
        rng = self.rng
        city, state, (low, high), districts = rng.choice(CITIES)
        street = f"{rng.choice(STREETS)}, {rng.randint(10, 4999)}{rng.choice(ADDRESS_COMPLEMENTS)}"
        zip_code = f"{rng.randint(low, high):05d}{rng.randint(0, 999):03d}"
        return _Address(street, rng.choice(districts), city, state, zip_code)

    def _sa1_rows(self, customer: _Customer, store: str) -> Iterator[Row]:
        if customer.person == "F":
            tax_id = customer.tax_root + cpf_check_digits(customer.tax_root)
        else:
            base = f"{customer.tax_root}{int(store):04d}"  # store 02 → branch /0002
            tax_id = base + cnpj_check_digits(base)
        address = customer.address if store == "01" else self._address()
        row = _sa1_row(customer, store, tax_id, address)
        forced = store == "01" and self._role(customer.index) == ROLE_SA1_DELETED
        if forced or self.rng.random() < 0.02:
            # An older version of the same code/store, deleted when it was re-registered.
            old_email = f"antigo@{_slug(customer.short_name) or 'cliente'}.example"
            self.sa1_recno += 1
            yield row | {
                "A1_EMAIL": pad(old_email, 250),
                "A1_END": pad(self._address().street, 80),
                "D_E_L_E_T_": DELETED,
                "R_E_C_N_O_": self.sa1_recno,
            }
        self.sa1_recno += 1
        yield row | {"R_E_C_N_O_": self.sa1_recno}

    # SE1 ---------------------------------------------------------------------------------------

    def _next_number(self, branch: str) -> str:
        if branch not in self.numbers:
            self.numbers[branch] = self.rng.randint(1_000, 90_000)
        self.numbers[branch] += 1
        return f"{self.numbers[branch]:09d}"

    def _se1_rows(self, customer: _Customer, store: str) -> Iterator[Row]:
        rng = self.rng
        role = self._role(customer.index)
        main_store = store == "01"
        forced = list(self._forced_offsets(customer.index)) if main_store else []
        if main_store and customer.code == HOSTILE_CODE:
            forced.append(-20)
        if main_store and role in (ROLE_ABATEMENT, ROLE_EMPTY_BAIXA) and not forced:
            forced.append(-rng.randint(2, 60))
        remaining = max(rng.randint(2, 8), len(forced))
        first_main: Row | None = None
        empty_baixa = main_store and role == ROLE_EMPTY_BAIXA
        while remaining > 0:
            offset = forced.pop(0) if forced else None
            if offset is not None or remaining == 1 or rng.random() < 0.7:
                parcels = 1
            else:
                parcels = min(remaining, rng.randint(2, 3))
            remaining -= parcels
            for row in self._document(customer, store, parcels, offset, empty_baixa):
                if first_main is None:
                    first_main = row
                yield from self._around(customer, row)
            empty_baixa = False
        if main_store and first_main is not None:
            yield from self._showcase_rows(customer, store, role, first_main)
        if rng.random() < 0.04:
            yield self._never_collected(customer, store, rng.choice(NEVER_COLLECTED))

    def _document(
        self,
        customer: _Customer,
        store: str,
        parcels: int,
        offset: int | None,
        empty_baixa: bool = False,
    ) -> Iterator[Row]:
        """One invoice: a single título or installments A, B, C due 30 days apart."""
        rng = self.rng
        branch = "01" if rng.random() < 0.85 else "02"
        kind = rng.choices(("NF ", "DP ", "BOL"), (50, 30, 20))[0]
        prefix = rng.choice(("NF ", "1  ")) if kind == "NF " else rng.choice(("1  ", "NF ", "DP "))
        number = self._next_number(branch)
        if offset is not None:
            first_due = self.as_of + timedelta(days=offset)
        else:
            first_due = self.as_of + timedelta(days=rng.randint(-120, 20 - 30 * (parcels - 1)))
        issued = first_due - timedelta(days=30)  # installments share the invoice's issue date
        history = rng.choice(HISTORIES).format(n=rng.randint(1000, 99999))
        if customer.code == HOSTILE_CODE:
            history = ""
        for parcel in range(parcels):
            due = first_due + timedelta(days=30 * parcel)
            value = round(rng.uniform(150.0, 25_000.0), 2)
            if offset is not None:
                status = 1.0
            else:
                roll = rng.random()
                status = 0.0 if roll < 0.15 else rng.uniform(0.2, 0.8) if roll < 0.25 else 1.0
            balance = round(value * status, 2)
            paid_on = None
            if status < 1.0:
                last = min(self.as_of, _real_due(due) + timedelta(days=15))
                paid_on = issued + timedelta(days=rng.randint(0, (last - issued).days))
            situation = (
                rng.choice(("0", "1"))
                if offset is not None
                else rng.choices(SITUATIONS, SITUATION_WEIGHTS)[0]
            )
            yield self._se1_row(
                customer,
                store,
                branch=branch,
                prefix=prefix,
                number=number,
                parcel=" " if parcels == 1 else "ABC"[parcel],
                kind=kind,
                issued=issued,
                due=due,
                value=value,
                balance=balance,
                paid_on=paid_on,
                situation=situation,
                history=history,
                empty_baixa=empty_baixa,
            )

    def _around(self, customer: _Customer, row: Row) -> Iterator[Row]:
        """A main título, sometimes preceded by a deleted old version and followed by abatements."""
        rng = self.rng
        open_ = float(row["E1_SALDO"]) > 0
        if open_ and rng.random() < 0.015:
            yield self._deleted_copy(row)
        yield self._numbered(row)
        if open_ and rng.random() < 0.04:
            yield self._abatement(row, rng.choice(("AB-", "IR-")))

    def _showcase_rows(
        self, customer: _Customer, store: str, role: int, first_main: Row
    ) -> Iterator[Row]:
        """The traps that every 20 customers carry at least once, whatever the seed."""
        if role == ROLE_NEVER_COLLECTED:
            for kind in NEVER_COLLECTED:
                yield self._never_collected(customer, store, kind)
        elif role == ROLE_ABATEMENT:
            yield self._abatement(first_main, "AB-")
            yield self._abatement(first_main, "IR-")
        elif role == ROLE_SE1_DELETED:
            yield self._deleted_standalone(customer, store)
        if role != ROLE_SE1_DELETED and self.rng.random() < 0.015:
            yield self._deleted_standalone(customer, store)

    def _numbered(self, row: Row) -> Row:
        self.se1_recno += 1
        return row | {"R_E_C_N_O_": self.se1_recno}

    def _deleted_copy(self, row: Row) -> Row:
        """A deleted old version of a live título: same key, other value, lower R_E_C_N_O_."""
        value = round(float(row["E1_VALOR"]) * 1.1, 2)
        old = {"E1_VALOR": value, "E1_SALDO": value, "E1_BAIXA": format_date(None)}
        return self._numbered(row | old | {"D_E_L_E_T_": DELETED})

    def _deleted_standalone(self, customer: _Customer, store: str) -> Row:
        """A deleted título (a cancelled invoice) that would otherwise be overdue and open."""
        rng = self.rng
        due = self.as_of - timedelta(days=rng.randint(5, 90))
        value = round(rng.uniform(150.0, 25_000.0), 2)
        row = self._se1_row(
            customer, store, branch="01", prefix="NF ", number=self._next_number("01"),
            parcel=" ", kind="NF ", issued=due - timedelta(days=30), due=due, value=value,
            balance=value, paid_on=None, situation="1", history="NF CANCELADA",
        )  # fmt: skip
        return self._numbered(row | {"D_E_L_E_T_": DELETED})

    def _abatement(self, main: Row, kind: str) -> Row:
        """An abatement título: the main título's key with type AB-/IR-, reducing what is owed."""
        rate = 0.05 if kind == "AB-" else 0.015
        amount = round(float(main["E1_SALDO"]) * rate, 2)
        return self._numbered(
            main
            | {
                "E1_TIPO": pad(kind, 3),
                "E1_VALOR": amount,
                "E1_SALDO": amount,
                "E1_BAIXA": format_date(None),
                "E1_VALJUR": 0.0,
                "E1_PORCJUR": 0.0,
                "E1_SDACRES": 0.0,
                "E1_SDDECRE": 0.0,
                "E1_HIST": pad("ABATIMENTO" if kind == "AB-" else "IR RETIDO NA FONTE", 40),
                "D_E_L_E_T_": LIVE,
            }
        )

    def _never_collected(self, customer: _Customer, store: str, kind: str) -> Row:
        """An open, overdue-looking título of a type that is never collected (RA, PR, NCC, TX)."""
        rng = self.rng
        due = self.as_of - timedelta(days=rng.randint(2, 60))
        value = round(rng.uniform(150.0, 5_000.0), 2)
        prefix = {"RA ": "RA ", "PR ": "PR ", "NCC": "DEV", "TX ": "TX "}[kind]
        row = self._se1_row(
            customer, store, branch="01", prefix=prefix, number=self._next_number("01"),
            parcel=" ", kind=kind, issued=due - timedelta(days=30), due=due, value=value,
            balance=value, paid_on=None, situation="0", history="",
        )  # fmt: skip
        return self._numbered(row)

    def _se1_row(
        self,
        customer: _Customer,
        store: str,
        *,
        branch: str,
        prefix: str,
        number: str,
        parcel: str,
        kind: str,
        issued: date,
        due: date,
        value: float,
        balance: float,
        paid_on: date | None,
        situation: str,
        history: str,
        empty_baixa: bool = False,
    ) -> Row:
        """Every SE1 column (R_E_C_N_O_ is added when the row is emitted)."""
        rng = self.rng
        rate_roll = rng.random()
        if rate_roll < 0.5:
            porcjur, valjur = 0.0333, 0.0
        elif rate_roll < 0.75:
            porcjur, valjur = 0.0, round((balance or value) * 0.00033, 2)
        else:
            porcjur, valjur = 0.0, 0.0
        additions = deductions = 0.0
        if balance > 0 and rng.random() < 0.05:
            if rng.random() < 0.5:
                additions = round(rng.uniform(2.0, 50.0), 2)
            else:
                deductions = round(rng.uniform(2.0, 50.0), 2)
        barcode = line = ""
        if kind.strip() in ("DP", "BOL") and balance > 0:
            barcode, line = _boleto(branch, number, parcel, _real_due(due), value)
            if customer.code == HOSTILE_CODE:
                # A mistyped check digit (field 2): the letter must leave this boleto out.
                line = line[:20] + str((int(line[20]) + 1) % 10) + line[21:]
        baixa = format_date(paid_on)
        if paid_on is None and empty_baixa:
            baixa = ""  # the other blank-date representation (some databases trim CHAR)
        return {
            "E1_FILIAL": pad(branch, 2),
            "E1_PREFIXO": pad(prefix, 3),
            "E1_NUM": pad(number, 9),
            "E1_PARCELA": pad(parcel, 2),
            "E1_TIPO": pad(kind, 3),
            "E1_CLIENTE": pad(customer.code, 6),
            "E1_LOJA": pad(store, 2),
            "E1_NOMCLI": pad(customer.name, 20),
            "E1_EMISSAO": format_date(issued),
            "E1_VENCTO": format_date(due),
            "E1_VENCREA": format_date(_real_due(due)),
            "E1_BAIXA": baixa,
            "E1_VALOR": value,
            "E1_SALDO": balance,
            "E1_VALJUR": valjur,
            "E1_PORCJUR": porcjur,
            "E1_MULTA": 0.0,
            "E1_JUROS": 0.0,
            "E1_SDACRES": additions,
            "E1_SDDECRE": deductions,
            "E1_SITUACA": pad(situation, 1),
            "E1_PORTADO": pad(DEMO_BANK if barcode else "", 3),
            "E1_NUMBCO": pad(barcode[19:30] if barcode else "", 15),
            "E1_CODBAR": pad(barcode, 44),
            "E1_CODDIG": pad(line, 48),
            "E1_MOEDA": 1,
            "E1_HIST": pad(history, 40),
            "D_E_L_E_T_": LIVE,
        }


def _boleto(branch: str, number: str, parcel: str, due: date, value: float) -> tuple[str, str]:
    """A valid boleto of the demo bank: barcode and typeable line, from the título's own key.

    The free field comes from the key, not the random stream, so adding boletos left every
    other row of the demo as it was.
    """
    if due >= BOLETO_ROLLOVER:
        factor = (due - BOLETO_ROLLOVER).days % 9000 + 1000
    else:
        factor = (due - BOLETO_FACTOR_BASE).days
    cents = round(value * 100)
    free = f"{branch}{number}{ord(parcel.strip() or '0') % 100:02d}".ljust(25, "0")[:25]
    body = f"{DEMO_BANK}9{factor:04d}{cents:010d}{free}"
    barcode = body[:4] + str(mod11_barcode(body)) + body[4:]
    return barcode, barcode_to_line(barcode)


def _fit(width: int, *candidates: str) -> str:
    """The first candidate that fits the column, so names are not cut mid-word."""
    for candidate in candidates:
        if len(candidate) <= width:
            return candidate
    return candidates[-1][:width]


def _sa1_row(customer: _Customer, store: str, tax_id: str, address: _Address) -> Row:
    """Every SA1 column but R_E_C_N_O_ for one store of a customer."""
    billing = customer.billing
    return {
        "A1_FILIAL": pad("", 2),  # SA1 shared between branches
        "A1_COD": pad(customer.code, 6),
        "A1_LOJA": pad(store, 2),
        "A1_NOME": pad(customer.name, 40),
        "A1_NREDUZ": pad(customer.short_name, 20),
        "A1_PESSOA": customer.person,
        "A1_CGC": pad(tax_id, 14),
        "A1_EMAIL": pad(customer.emails, 250),
        "A1_END": pad(address.street, 80),
        "A1_BAIRRO": pad(address.district, 40),
        "A1_MUN": pad(address.city, 60),
        "A1_EST": pad(address.state, 2),
        "A1_CEP": pad(address.zip_code, 8),
        "A1_ENDCOB": pad(billing.street, 80),
        "A1_BAIRROC": pad(billing.district, 40),
        "A1_MUNC": pad(billing.city, 60),
        "A1_ESTC": pad(billing.state, 2),
        "A1_CEPC": pad(billing.zip_code, 8),
        "A1_MSBLQL": "1" if customer.blocked else "2",
        "A1_RISCO": customer.risk,
        "D_E_L_E_T_": LIVE,
    }
