"""The run summary a person reads at the end of `cobranca run` (text) or a script parses (JSON)."""

from __future__ import annotations

import json

from .plan import SKIP_REASONS
from .runner import Listed, RunReport

MAX_LISTED = 20


def format_json(report: RunReport) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False)


def format_text(report: RunReport) -> str:
    lines: list[str] = []
    for letter_id, status in report.recovered:
        lines.append(f"interrupted letter {letter_id} recovered as {status}")
    for result in report.results:
        mode = " (dry run: nothing sent or recorded)" if result.dry_run else ""
        run = f" run {result.run_id}" if result.run_id else ""
        lines.append(f"layout {result.layout} — as of {result.as_of.isoformat()}{run}{mode}")
        if result.error:
            lines.append(f"  ERROR: {result.error}")
        if result.dry_run:
            lines.append(f"  would send:   {result.would_send}")
        else:
            lines.append(f"  planned:      {result.planned}")
            if result.carried_over:
                lines.append(f"  carried over: {result.carried_over}  (planned today by another "
                             "run, still to send)")  # fmt: skip
            lines.append(f"  sent:         {result.sent}")
        lines.append(f"  to print:     {result.print_needed}  (no usable e-mail)")
        lines.append(f"  failed:       {result.failed}")
        if not result.dry_run:
            lines.append(f"  ambiguous:    {result.ambiguous}  (may have been delivered: resolve)")
            lines.append(f"  left planned: {result.left_planned}  (the next run sends them)")
        lines.append(f"  skipped:      {sum(result.skipped.values())}")
        for reason, count in sorted(result.skipped.items()):
            lines.append(f"    {count:>5}  {reason}: {SKIP_REASONS.get(reason, reason)}")
        _listed(lines, "failures", result.failures)
        _listed(lines, "AMBIGUOUS (never resent automatically)", result.ambiguities)
        _listed(lines, "printed letters needed", result.prints)
        _listed(lines, "unreadable títulos (skipped)", result.rejected_titles)
        _listed(lines, "invalid e-mail entries (ignored)", result.invalid_emails)
        _listed(lines, "ERP data left out of letters (fix it there)", result.data_problems)
        if result.interrupted:
            lines.append("  interrupted: the remaining customers are left for the next run")
        lines.append("")
    total_sent = sum(r.sent for r in report.results)
    total_failed = sum(r.failed for r in report.results)
    errors = sum(1 for r in report.results if r.error)
    total_ambiguous = sum(r.ambiguous for r in report.results)
    lines.append(
        f"total: {total_sent} sent, {total_failed} failed, {total_ambiguous} ambiguous, "
        f"{errors} layout(s) with errors"
    )
    return "\n".join(lines)


def _listed(lines: list[str], title: str, listed: Listed) -> None:
    if not listed.total:
        return
    lines.append(f"  {title}:")
    for who, why in listed.entries[:MAX_LISTED]:
        lines.append(f"    {who}: {why}")
    if listed.total > MAX_LISTED:
        where = "the log" if listed.unlisted else "the log and --format json"
        lines.append(f"    ... and {listed.total - MAX_LISTED} more (each one is in {where})")
