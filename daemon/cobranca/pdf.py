"""Printed letters: a planned letter as an A4 PDF for a window envelope, with xhtml2pdf.

The print template (``templates/impressa/carta.html.j2``, or ``impressa/<template>.html.j2``
when a layout has its own) runs in the same sandboxed, autoescaping Jinja environment as the
e-mail and reuses the layout's texts (``textos/<template>.j2``), so the paper letter says what
the e-mail says. xhtml2pdf is pure Python (ReportLab underneath): no system libraries.

The HTML comes from templates finance edits, so the renderer gets no network and no files:
xhtml2pdf's resource policy refuses every ``http(s)``/``file`` URL (images, fonts, stylesheets)
and bounds the render time. Each letter is rendered on its own (its own "Página X de Y") and
several letters are merged into one PDF, each starting on a new page.
"""

from __future__ import annotations

import base64
import io
import logging
import multiprocessing
import os
from array import array
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from typing import Any, BinaryIO

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .config import Config, Layout
from .models import PlannedLetter
from .payment import letter_payment
from .render import (
    TemplateProblem,
    clean_subject,
    compile_string,
    letter_context,
    load_template,
    make_environment,
    render_template,
)

PRINT_DIR = "impressa"
DEFAULT_PRINT_TEMPLATE = f"{PRINT_DIR}/carta.html.j2"
# A letter with thousands of títulos is a few hundred pages; anything slower is a runaway template.
MAX_RENDER_SECONDS = 120

log = logging.getLogger(__name__)


class PdfError(Exception):
    """xhtml2pdf could not turn a letter's HTML into a PDF."""


def print_template_names(layout: Layout) -> list[str]:
    """The layout's own print template first, then the shared one."""
    return [f"{PRINT_DIR}/{layout.template}.html.j2", DEFAULT_PRINT_TEMPLATE]


def texts_template_name(layout: Layout) -> str:
    """The texts the e-mail of this layout uses (titulo, saudacao, corpo, encerramento)."""
    return f"textos/{layout.template}.j2"


class PdfRenderer:
    """Renders letters of any layout of one config; templates are compiled once per layout."""

    def __init__(self, config: Config, env: ImmutableSandboxedEnvironment | None = None):
        self.config = config
        self.env = env or make_environment(config.templates_dir)
        self.creditor = config.creditor.model_dump()
        self._compiled: dict[str, tuple[jinja2.Template, jinja2.Template, str]] = {}

    def _templates(self, layout_name: str) -> tuple[jinja2.Template, jinja2.Template, str]:
        if layout_name not in self._compiled:
            layout = self.config.layout(layout_name)
            texts = texts_template_name(layout)
            # A missing texts file is named now, not later as an obscure Jinja error.
            load_template(self.env, texts)
            self._compiled[layout_name] = (
                _select(self.env, print_template_names(layout)),
                compile_string(self.env, layout.subject, "subject"),
                texts,
            )
        return self._compiled[layout_name]

    def html(self, letter: PlannedLetter) -> str:
        """The letter's print HTML (what xhtml2pdf gets); raises TemplateProblem."""
        template, subject_template, texts = self._templates(letter.layout)
        payment = letter_payment(letter, self.config.layout(letter.layout), self.config.creditor)
        qr_src = ""
        if payment.pix:
            # xhtml2pdf reads data: URIs; files and the network are refused (see html_to_pdf).
            qr_src = "data:image/png;base64," + base64.b64encode(payment.pix.qr_png).decode()
        context: dict[str, Any] = letter_context(letter, self.creditor, payment, qr_src)
        subject = clean_subject(render_template(subject_template, context))
        return render_template(template, {**context, "subject": subject, "textos_modelo": texts})

    def one(self, letter: PlannedLetter) -> bytes:
        """One letter as a PDF of its own (pages numbered 1..N)."""
        return html_to_pdf(self.html(letter), what=f"customer {letter.customer.key}")

    def pdfs(
        self,
        letters: Sequence[PlannedLetter],
        progress: Callable[[int], None] | None = None,
        workers: int | None = None,
    ) -> Generator[bytes, None, None]:
        """Each letter's PDF, in order, as it is rendered (close it to stop early).

        With ``workers`` above 1 (default: one per CPU this process may use) and at least
        POOL_FROM letters, the letters are rendered in that many processes: a letter takes
        xhtml2pdf ~0.1–0.2 s of one core, and month-end paper runs have thousands.
        """
        count = _usable_cpus() if workers is None else workers
        if count > 1 and len(letters) >= POOL_FROM:
            parts = _rendered_in_pool(self.config, letters, count)
        else:
            parts = (self.one(letter) for letter in letters)
        return _with_progress(parts, progress)

    def join(self, parts: Iterable[bytes], sink: BinaryIO) -> int:
        """Letters' PDFs into one, written to ``sink`` as they come; its page count.

        Each letter starts on a new page and keeps its own page numbering.
        """
        joined = PdfConcatenation(
            sink,
            title=f"Cartas de cobrança – {self.creditor['name']}",
            author=self.creditor["name"],
        )
        for part in parts:
            joined.add(part)
        return joined.close()


POOL_FROM = 16  # fewer letters than this render faster than worker processes start
_WORKER: PdfRenderer | None = None  # each pool process's own renderer


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _start_worker(config: Config) -> None:
    global _WORKER
    _WORKER = PdfRenderer(config)


def _render_in_worker(letter: PlannedLetter) -> bytes:
    assert _WORKER is not None
    return _WORKER.one(letter)


def _rendered_in_pool(
    config: Config, letters: Sequence[PlannedLetter], workers: int
) -> Generator[bytes, None, None]:
    """Each letter's PDF, in order, rendered by ``workers`` fresh processes.

    Fresh (spawned) processes, not forked ones: nothing of the caller's state (open database
    connections, threads) is shared. A letter's error is raised here, in order, and the
    letters not yet rendered are cancelled.
    """
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        min(workers, len(letters)), mp_context=context, initializer=_start_worker,
        initargs=(config,),
    )  # fmt: skip
    try:
        yield from pool.map(_render_in_worker, letters, chunksize=4)
    except BrokenProcessPool as exc:  # killed (out of memory?) or could not start
        raise PdfError(f"a PDF worker process stopped: {exc}") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def render_pdf_one(letter: PlannedLetter, config: Config) -> bytes:
    """One letter as an A4 PDF."""
    return PdfRenderer(config).one(letter)


def html_to_pdf(html: str, *, what: str = "letter") -> bytes:
    """xhtml2pdf with no network, no local files and a time limit."""
    from xhtml2pdf import pisa
    from xhtml2pdf.config.resources import RenderLimitError, ResourceAccessPolicy

    policy = ResourceAccessPolicy.server(
        base_dir=None,  # no directory a document may read: local files are refused
        allow_remote=False,
        max_render_seconds=MAX_RENDER_SECONDS,
    )
    output = io.BytesIO()
    try:
        status = pisa.CreatePDF(html, dest=output, encoding="utf-8", resource_policy=policy)
    except RenderLimitError as exc:
        raise PdfError(f"{what}: PDF rendering stopped: {exc}") from None
    except Exception as exc:  # the library's own failure on odd HTML: one clear error type
        raise PdfError(f"{what}: PDF rendering failed: {type(exc).__name__}: {exc}") from exc
    if status.err:
        messages = "; ".join(str(entry[2]) for entry in status.log if entry[0] == "error")
        raise PdfError(f"{what}: PDF rendering failed: {messages or 'see the log'}")
    return output.getvalue()


class PdfConcatenation:
    """One PDF written part by part: each part's objects go to ``sink`` as the part is added.

    pypdf's PdfWriter keeps every page of every part until it writes (~100 KB of Python
    objects a letter here: gigabytes for a month-end paper run); here a part is read, its
    objects renumbered and written, and only its pages' numbers stay for the page tree. The
    page tree, catalog, information dictionary and cross-reference table are written by
    ``close``.
    """

    _PAGES, _CATALOG, _INFO = 1, 2, 3  # written last, numbered first
    _HEADER = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"  # binary comment: a binary file to mailers

    def __init__(self, sink: BinaryIO, *, title: str = "", author: str = "") -> None:
        self._sink = sink
        # The byte offset of object n at [n - 1], and the pages' object numbers: machine
        # integers, 8 bytes each instead of a Python int's 36 (~40 objects a letter).
        self._offsets = array("Q", (0, 0, 0))
        self._pages = array("Q")
        self._info = {"/Producer": "cobranca", "/Title": title, "/Author": author}
        self._position = 0
        self._write(self._HEADER)

    def add(self, data: bytes) -> None:
        """Append every page of one PDF, in order (``close`` says how many in all)."""
        from pypdf import PdfReader
        from pypdf.generic import IndirectObject, NameObject

        reader = PdfReader(io.BytesIO(data))
        numbers: dict[tuple[int, int], int] = {}  # the part's (number, generation) → ours
        waiting: list[IndirectObject] = []

        def ours(reference: IndirectObject) -> IndirectObject:
            key = (reference.idnum, reference.generation)
            if key not in numbers:
                self._offsets.append(0)
                numbers[key] = len(self._offsets)
                waiting.append(reference)
            return IndirectObject(numbers[key], 0, None)

        # Each page as the reader gives it, with what it inherits from its page tree (media
        # box, resources) copied in: the page's own object may lack them.
        pages: dict[tuple[int, int], Any] = {}
        for page in reader.pages:
            reference = page.indirect_reference
            if reference is None:
                raise PdfError("a rendered letter has a page that is not an indirect object")
            ours(reference)
            pages[(reference.idnum, reference.generation)] = page
        parent = NameObject("/Parent")
        while waiting:
            reference = waiting.pop()
            key = (reference.idnum, reference.generation)
            page = pages.get(key)
            value = reference.get_object() if page is None else page
            if page is not None:  # its parent is our page tree, not the part's
                dict.pop(value, parent, None)
            _relink(value, ours)
            if page is not None:
                dict.__setitem__(value, parent, IndirectObject(self._PAGES, 0, None))
            self._write_object(numbers[key], value)
        self._pages.extend(numbers[key] for key in pages)

    def close(self) -> int:
        """Write the page tree, catalog and cross-reference table; the number of pages."""
        from pypdf.generic import (
            ArrayObject,
            DictionaryObject,
            IndirectObject,
            NameObject,
            NumberObject,
            create_string_object,
        )

        if not self._pages:
            raise ValueError("no PDF to join")
        self._write_object(self._PAGES, DictionaryObject({
            NameObject("/Type"): NameObject("/Pages"),
            NameObject("/Kids"): ArrayObject(IndirectObject(n, 0, None) for n in self._pages),
            NameObject("/Count"): NumberObject(len(self._pages)),
        }))  # fmt: skip
        self._write_object(self._CATALOG, DictionaryObject({
            NameObject("/Type"): NameObject("/Catalog"),
            NameObject("/Pages"): IndirectObject(self._PAGES, 0, None),
        }))  # fmt: skip
        self._write_object(self._INFO, DictionaryObject({
            NameObject(key): create_string_object(text) for key, text in self._info.items() if text
        }))  # fmt: skip
        start = self._position
        entries = "".join(f"{offset:010d} 00000 n \n" for offset in self._offsets)
        size = len(self._offsets) + 1
        self._write(
            f"xref\n0 {size}\n0000000000 65535 f \n{entries}"
            f"trailer\n<< /Size {size} /Root {self._CATALOG} 0 R /Info {self._INFO} 0 R >>\n"
            f"startxref\n{start}\n%%EOF\n".encode("ascii")
        )
        return len(self._pages)

    def _write_object(self, number: int, value: Any) -> None:
        buffer = io.BytesIO()
        buffer.write(b"%d 0 obj\n" % number)
        value.write_to_stream(buffer)
        buffer.write(b"\nendobj\n")
        self._offsets[number - 1] = self._position
        self._write(buffer.getvalue())

    def _write(self, data: bytes) -> None:
        self._sink.write(data)
        self._position += len(data)


def _relink(value: Any, ours: Callable[[Any], Any]) -> None:
    """Point every reference inside ``value`` (in place) at its object's number in ours.

    Raw access (dict.items, list indexes): pypdf's own look-ups would follow the references.
    """
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, DictionaryObject):  # streams too
            for key, inner in list(dict.items(item)):
                if isinstance(inner, IndirectObject):
                    dict.__setitem__(item, key, ours(inner))
                elif isinstance(inner, DictionaryObject | ArrayObject):
                    pending.append(inner)
        elif isinstance(item, ArrayObject):
            for index in range(len(item)):
                inner = list.__getitem__(item, index)
                if isinstance(inner, IndirectObject):
                    list.__setitem__(item, index, ours(inner))
                elif isinstance(inner, DictionaryObject | ArrayObject):
                    pending.append(inner)


def _select(env: ImmutableSandboxedEnvironment, names: list[str]) -> jinja2.Template:
    for name in names[:-1]:
        try:
            return load_template(env, name)
        except TemplateProblem as exc:
            if exc.message.startswith("template file not found: ") and exc.filename == name:
                continue
            raise
    return load_template(env, names[-1])


def _with_progress(
    items: Generator[bytes, None, None], progress: Callable[[int], None] | None
) -> Generator[bytes, None, None]:
    """``items``, counted; closing this closes them (a pool's processes go at once)."""
    with closing(items):
        for done, item in enumerate(items, 1):
            yield item
            if progress is not None:
                progress(done)
