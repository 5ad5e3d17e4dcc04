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
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

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

    def many(
        self,
        letters: Iterable[PlannedLetter],
        progress: Callable[[int], None] | None = None,
        workers: int | None = None,
    ) -> bytes:
        """Several letters in one PDF, each starting on a new page with its own numbering.

        With ``workers`` above 1 (default: one per CPU this process may use) and at least
        POOL_FROM letters, the letters are rendered in that many processes, in order: a
        letter takes xhtml2pdf ~0.1–0.2 s of one core, and month-end paper runs have
        thousands.
        """
        pending = list(letters)
        count = _usable_cpus() if workers is None else workers
        if count > 1 and len(pending) >= POOL_FROM:
            parts: Iterable[bytes] = _rendered_in_pool(self.config, pending, count)
        else:
            parts = (self.one(letter) for letter in pending)
        return merge_pdfs(
            _with_progress(parts, progress),
            title=f"Cartas de cobrança – {self.creditor['name']}",
            author=self.creditor["name"],
        )


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
) -> Iterator[bytes]:
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


def render_pdf(letters: Sequence[PlannedLetter], config: Config) -> bytes:
    """Several letters as one A4 PDF, each letter starting on a new page."""
    if not letters:
        raise ValueError("no letters to render")
    return PdfRenderer(config).many(letters)


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


def merge_pdfs(parts: Iterable[bytes], *, title: str = "", author: str = "") -> bytes:
    """Concatenate PDFs page by page (each part keeps its pages, in order)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    count = 0
    for part in parts:
        writer.append(PdfReader(io.BytesIO(part)))
        count += 1
    if not count:
        raise ValueError("no PDF to merge")
    metadata = {"/Producer": "cobranca"}
    if title:
        metadata["/Title"] = title
    if author:
        metadata["/Author"] = author
    writer.add_metadata(metadata)
    output = io.BytesIO()
    writer.write(output)
    return output.getvalue()


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
    items: Iterable[bytes], progress: Callable[[int], None] | None
) -> Iterable[bytes]:
    for done, item in enumerate(items, 1):
        yield item
        if progress is not None:
            progress(done)
