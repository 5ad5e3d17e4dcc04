"""Benchmark a whole daily run at 100k and 1M open títulos; print a table, write JSON.

    .venv/bin/python -m bench.run --quick                       # smoke: 10k títulos, ~1 min
    .venv/bin/python -m bench.run --sizes 100k --backends sqlite,postgresql \
        --transports outbox,smtp
    .venv/bin/python -m bench.run --sizes 100k,1m --backends sqlite --transports outbox

For each size and backend: generate (or reuse) the Protheus database, then measure each stage
beside its bare limit in the same process (bench/stages.py), then the whole `run_layouts` per
transport in a child process with a fresh history (bench/wholerun.py): letters per second and
peak RSS. See bench/README.md for what each figure means and the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import benchconfig, datasets, stages, wholerun
from bench.smtpserver import CountingSmtpServer

RESULTS_DIR = datasets.BENCH_DIR / "results"
WORK_DIR = datasets.DATA_DIR / "work"
RATIO_TARGET = 1.25
RSS_TARGET_MB = 250.0
RSS_GROWTH_TARGET = 1.2
OUTBOX_LETTERS = 50_000
OUTBOX_SECONDS = 60.0
TRASH_PREFIX = ".trash-"


def set_aside(path: Path) -> None:
    """Move `path` out of the way now; :func:`empty_trash` deletes it when the bench ends.

    Deleting many files makes creating files slow for minutes after on some filesystems: ext4
    without a journal (this project's CI machine) skips every inode freed in the last 60 s to
    6 min, one by one, each time it allocates one. After the last run's outbox was deleted,
    the next run's outbox paid 0.3–1 ms of kernel time a file, 20× its usual cost
    (bench/README.md). A rename frees nothing.
    """
    if path.exists():
        path.rename(path.with_name(f"{TRASH_PREFIX}{path.name}-{time.time_ns()}"))


def file_create_ms(folder: Path, files: int = 200) -> float:
    """What creating a 40 KB file (an outbox letter's size) costs right now, in ms: it says
    whether the run's outbox will pay for files deleted in the last minutes (set_aside)."""
    folder.mkdir(parents=True)
    data = b"x" * 40_000
    start = time.perf_counter()
    for number in range(files):
        (folder / f"{number}.eml").write_bytes(data)
    return (time.perf_counter() - start) / files * 1000


def empty_trash(folder: Path = WORK_DIR) -> None:
    """Delete what was set aside, this bench's and any an interrupted one left."""
    for path in folder.glob(f"{TRASH_PREFIX}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


# --- machine ------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=benchconfig.REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_paths": git("status", "--porcelain", "daemon", "templates").splitlines(),
    }


def machine_info(backends: list[str]) -> dict[str, Any]:
    packages = {}
    for name in ("SQLAlchemy", "Jinja2", "psycopg", "aiosmtpd", "segno", "Babel", "yagmail"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_mb": _mem_total_mb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": None,
        "packages": packages,
        "git": _git(),
    }
    if "postgresql" in backends:
        info["postgresql"] = datasets.pg_version()
    return info


# --- one size × backend -------------------------------------------------------------------------


def _history(backend: str, work: Path, name: str) -> tuple[str, str | None]:
    """(URL, PostgreSQL database to drop afterwards) of a fresh, empty history store."""
    if backend == "postgresql":
        database = f"cobranca_bench_hist_{os.getpid()}_{name}"
        return datasets.pg_create_database(database, replace=True), database
    path = work / f"history-{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}", None


def whole_run(
    args: argparse.Namespace,
    dataset: datasets.Dataset,
    transport: str,
    work: Path,
    server: CountingSmtpServer | None,
) -> dict[str, Any]:
    name = f"{dataset.backend}-{dataset.label}-{transport}"
    history_url, pg_database = _history(dataset.backend, work, f"run-{transport}")
    outbox = work / f"outbox-run-{transport}"
    set_aside(outbox)
    data = benchconfig.config_data(
        source_url=dataset.url,
        history_url=history_url,
        transport=transport,
        outbox=outbox,
        smtp_port=server.port if server else None,
        layout_kind=args.layouts,
        pix=args.pix,
        max_letters=args.max_letters,
    )
    config_path = work / f"run-{transport}.yaml"
    benchconfig.write_config(config_path, data)
    command = [sys.executable, "-m", "bench.wholerun", str(config_path), datasets.AS_OF.isoformat()]
    profile = None
    if args.profile:
        profile = RESULTS_DIR / f"profile-{name}.html"
        command += ["--profile", str(profile)]
    log_path = work / f"run-{transport}.log"
    received_before = server.messages if server else 0
    create_ms = file_create_ms(work / f"probe-{transport}")
    log(f"  creating a file here takes {create_ms:.3f} ms now (bench/README.md: trash)")
    log(f"  whole run ({transport}, layouts {args.layouts}) in a child process; log: {log_path}")
    load_before = os.getloadavg()
    done_flag = work / f"run-{transport}.done"
    done_flag.unlink(missing_ok=True)
    share = [*command[:5], "--share-until", str(done_flag)]
    start = time.perf_counter()
    try:
        extra = [
            subprocess.Popen(share, cwd=benchconfig.REPO, stdout=subprocess.PIPE,
                             stderr=(work / f"run-{transport}-sender{n}.log").open("w"), text=True)
            for n in range(2, args.senders + 1)
        ]  # fmt: skip
        with log_path.open("w") as log_file:
            done = subprocess.run(
                command,
                cwd=benchconfig.REPO,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                check=False,
            )
        done_flag.touch()
        shared = [json.loads(sender.communicate()[0].strip().splitlines()[-1]) for sender in extra]
        elapsed = time.perf_counter() - start
        lines = done.stdout.strip().splitlines()
        if not lines:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"whole run failed (exit {done.returncode}):\n{tail}")
        result: dict[str, Any] = json.loads(lines[-1])
        if transport == "outbox":  # one file per letter sent: nothing written twice
            result["outbox_files"] = sum(1 for _ in outbox.glob("*.eml"))
        if shared:  # several senders: the run ends when the last one does
            result["letters_by_sender"] = [result["letters"], *(x["letters"] for x in shared)]
            result["letters"] = sum(result["letters_by_sender"])
            result["sent"] = result["letters"]
            result["wall_s"] = elapsed
            result["letters_per_s"] = result["letters"] / elapsed
            peaks = [result["peak_rss_kib"], *(x["peak_rss_kib"] for x in shared)]
            result["peak_rss_kib_by_sender"] = peaks
            result["peak_rss_kib"] = max(peaks)
        if transport == "outbox" and result["letters"] >= OUTBOX_LETTERS:
            # The target's own figure, read before the history goes: when that letter went.
            result["time_to_target_letters_s"] = wholerun.time_to_letter(
                config_path, OUTBOX_LETTERS
            )
    finally:
        if pg_database and not args.keep:
            datasets.pg_drop_database(pg_database)
        if not args.keep:
            set_aside(outbox)
    result.update(loadavg_before=load_before, loadavg_after=os.getloadavg(),
                  file_create_ms_before=create_ms)  # fmt: skip
    if result.get("deliver_s"):
        result["deliver_letters_per_s"] = result["letters"] / result["deliver_s"]
    result.update(
        transport=transport,
        process_wall_s=elapsed,
        log=str(log_path),
        profile=str(profile) if profile else None,
        layouts=args.layouts,
        pix=args.pix,
        max_letters=args.max_letters,
        senders=args.senders,
    )
    if server is not None:
        result["server_received"] = server.messages - received_before
    letters = max(1, result["letters"])
    log(
        f"  SQL per letter: {result['sql_statements'] / letters:.1f} statements, "
        f"{result['sql_commits'] / letters:.1f} commits"
    )
    if result["errors"]:
        log(f"  errors: {result['errors']}")
    if result.get("letters_by_sender"):
        log(f"  letters by sender: {result['letters_by_sender']}")
    if "outbox_files" in result and result["outbox_files"] != result["letters"]:
        log(f"  MISMATCH: {result['outbox_files']:,} .eml files for {result['letters']:,} letters")
    log(
        f"  {result['letters']:,} letters in {result['wall_s']:.1f} s "
        f"({result['letters_per_s']:.1f} letters/s; plan {_s(result.get('plan_s'))}, deliver "
        f"{_s(result.get('deliver_s'))}), peak RSS {result['peak_rss_kib'] / 1024:.0f} MB"
    )
    return result


def _s(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"


def bench_one(args: argparse.Namespace, dataset: datasets.Dataset) -> dict[str, Any]:
    work = WORK_DIR / f"{dataset.backend}-{dataset.label}"
    set_aside(work)
    work.mkdir(parents=True)
    started = time.perf_counter()
    entry: dict[str, Any] = {
        "size": dataset.label,
        "backend": dataset.backend,
        "dataset": dataset.as_dict(),
        "stages": [],
        "whole_runs": [],
    }
    entry["loadavg_before"] = os.getloadavg()
    stage_history, stage_pg = _history(dataset.backend, work, "stages")
    try:
        config = benchconfig.write_config(
            work / "stages.yaml",
            benchconfig.config_data(
                source_url=dataset.url,
                history_url=stage_history,
                transport="outbox",
                outbox=work / "outbox-stage",
                pix=args.pix,
            ),
        )
        layout = config.layouts[0]
        if "stages" in args.parts:
            log(f"  source + plan (repeat {args.repeat}) over every selected row")
            source_cmp, plan = stages.source_plan(
                config, layout, datasets.AS_OF, repeat=args.repeat, sample_size=args.sample
            )
            entry["stages"].append(source_cmp.as_dict())
            _say(source_cmp)
            log(f"  render {len(plan.sample):,} letters (repeat {args.repeat})")
            render_cmp, composed, ids = stages.render(
                config, layout, plan.sample, repeat=args.repeat
            )
            entry["stages"].append(render_cmp.as_dict())
            _say(render_cmp)
            build_s, messages = stages.build_messages(config, layout, plan.sample, composed, ids)
            entry["build_message_s"] = build_s
            log(f"  build_message for {len(messages):,} letters: {build_s:.2f} s (not compared)")
            if "outbox" in args.transports:
                outbox_cmp = stages.delivery_outbox(config, messages, repeat=args.repeat)
                entry["stages"].append(outbox_cmp.as_dict())
                _say(outbox_cmp)
        server = CountingSmtpServer() if "smtp" in args.transports else None
        if server is not None:
            with server:
                if "stages" in args.parts:
                    smtp_config = benchconfig.write_config(
                        work / "stages-smtp.yaml",
                        benchconfig.config_data(
                            source_url=dataset.url,
                            history_url=stage_history,
                            transport="smtp",
                            smtp_port=server.port,
                            pix=args.pix,
                        ),
                    )
                    smtp_cmp = stages.delivery_smtp(
                        smtp_config, messages, server, repeat=args.repeat
                    )
                    entry["stages"].append(smtp_cmp.as_dict())
                    _say(smtp_cmp)
                if "run" in args.parts:
                    entry["whole_runs"].append(whole_run(args, dataset, "smtp", work, server))
        if "run" in args.parts and "outbox" in args.transports:
            entry["whole_runs"].insert(0, whole_run(args, dataset, "outbox", work, None))
    finally:
        if stage_pg:
            datasets.pg_drop_database(stage_pg)
        if not args.keep:
            set_aside(work)
    entry["wall_s"] = time.perf_counter() - started
    entry["loadavg_after"] = os.getloadavg()
    return entry


def _say(comparison: stages.Comparison) -> None:
    log(
        f"  {comparison.stage}: ours {comparison.ours_s:.3f} s, bare {comparison.bare_s:.3f} s, "
        f"ratio {comparison.ratio:.2f} ({comparison.items:,} {comparison.unit})"
    )


# --- verdicts and table -------------------------------------------------------------------------


def checks(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every figure with its target: one row of the table each."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        where = {"size": run["size"], "backend": run["backend"]}
        for stage in run["stages"]:
            rows.append(
                {
                    **where,
                    "check": stage["stage"],
                    "items": f"{stage['items']:,} {stage['unit']}",
                    "ours": f"{stage['ours_s']:.3f} s",
                    "bare": f"{stage['bare_s']:.3f} s",
                    "value": f"{stage['ratio']:.2f}×",
                    "target": f"≤ {RATIO_TARGET}×",
                    "ok": stage["ratio"] <= RATIO_TARGET,
                }
            )
        for whole in run["whole_runs"]:
            transport = whole["transport"]
            rate = whole["letters_per_s"]
            rows.append(
                {
                    **where,
                    "check": f"whole run {transport}",
                    "items": f"{whole['letters']:,} letters",
                    "ours": f"{whole['wall_s']:.1f} s",
                    "bare": "",
                    "value": f"{rate:,.1f} letters/s",
                    "target": ""
                    if transport != "outbox"
                    else f"≥ {OUTBOX_LETTERS / OUTBOX_SECONDS:,.0f}/s",
                    "ok": None
                    if transport != "outbox"
                    else rate >= OUTBOX_LETTERS / OUTBOX_SECONDS,
                }
            )
            if transport == "outbox" and rate:
                needed = whole.get("time_to_target_letters_s")
                measured = f"{OUTBOX_LETTERS:,}th letter sent"
                if needed is None:
                    needed = OUTBOX_LETTERS / rate
                    measured = "projected"
                    if whole.get("max_letters") and whole.get("left_planned"):
                        measured = "at the capped run's rate"
                rows.append(
                    {
                        **where,
                        "check": f"{OUTBOX_LETTERS:,} letters via outbox",
                        "items": measured,
                        "ours": f"{needed:,.0f} s",
                        "bare": "",
                        "value": f"{needed:,.0f} s",
                        "target": f"≤ {OUTBOX_SECONDS:.0f} s",
                        "ok": needed <= OUTBOX_SECONDS,
                    }
                )
            if whole.get("profile"):
                continue  # the profiler keeps every sample: neither time nor RSS counts
            peak = whole["peak_rss_kib"] / 1024
            rows.append(
                {
                    **where,
                    "check": f"peak RSS {transport}",
                    "items": "",
                    "ours": f"{peak:.0f} MB",
                    "bare": "",
                    "value": f"{peak:.0f} MB",
                    "target": f"≤ {RSS_TARGET_MB:.0f} MB",
                    "ok": peak <= RSS_TARGET_MB,
                }
            )
    # Streaming: the peak at the largest size within RSS_GROWTH_TARGET of the smallest's.
    by_key: dict[tuple[str, str], list[tuple[int, str, float]]] = {}
    for run in runs:
        for whole in run["whole_runs"]:
            if whole.get("profile"):
                continue
            key = (run["backend"], whole["transport"])
            by_key.setdefault(key, []).append(
                (run["dataset"]["open_titles"], run["size"], whole["peak_rss_kib"])
            )
    for (backend, transport), found in sorted(by_key.items()):
        if len(found) < 2:
            continue
        found.sort()
        (_, small, small_rss), (_, large, large_rss) = found[0], found[-1]
        growth = large_rss / small_rss
        rows.append(
            {
                "size": f"{large}/{small}",
                "backend": backend,
                "check": f"RSS growth {transport}",
                "items": "",
                "ours": f"{large_rss / 1024:.0f} MB",
                "bare": f"{small_rss / 1024:.0f} MB",
                "value": f"{growth:.2f}×",
                "target": f"≤ {RSS_GROWTH_TARGET}×",
                "ok": growth <= RSS_GROWTH_TARGET,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    headers = ("size", "backend", "check", "items", "ours", "bare", "ratio/value", "target", "")
    keys = ("size", "backend", "check", "items", "ours", "bare", "value", "target", "ok")
    body = [
        [
            ("PASS" if row[k] else "FAIL")
            if k == "ok" and row[k] is not None
            else ("" if row[k] is None else str(row[k]))
            for k in keys
        ]
        for row in rows
    ]
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)
    ]
    right = {3, 4, 5, 6}
    lines = []
    for cells in [list(headers), ["-" * w for w in widths], *body]:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        default="100k",
        help="open títulos per database: 10k, 100k, 1m... (comma separated)",
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="sqlite and/or postgresql (source and history on the same one)",
    )
    parser.add_argument("--transports", default="outbox,smtp", help="outbox and/or smtp")
    parser.add_argument(
        "--parts", default="stages,run", help="stages (ours vs bare) and/or run (whole run, RSS)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: --sizes 10k --sample 200 --repeat 1"
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=2000,
        help="letters rendered and delivered in the stage comparisons",
    )
    parser.add_argument("--repeat", type=int, default=2, help="alternating tries per stage")
    parser.add_argument(
        "--layouts",
        choices=("wide", "ladder"),
        default="wide",
        help="whole run: one layout of every overdue título (wide), or the "
        "4 layouts of config/cobranca.yaml (ladder)",
    )
    parser.add_argument(
        "--no-pix", dest="pix", action="store_false", help="letters without the Pix QR code"
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=1,
        help="whole run: processes sending (1 plans and sends; the others join its run as a "
        "second `cobranca run` on the same history does)",
    )
    parser.add_argument(
        "--max-letters",
        type=int,
        default=None,
        help="whole run: delivery.max_letters_per_run (plan stays complete)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="whole run under pyinstrument (pip install pyinstrument); "
        "bench/results/profile-*.html and .txt",
    )
    parser.add_argument("--regenerate", action="store_true", help="rewrite the databases")
    parser.add_argument("--generate-only", action="store_true", help="only build the databases")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep outboxes, histories and logs under bench/data/work",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="results file (default: bench/results/bench-<date>.json)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.sample, args.repeat = "10k", 200, 1

    def items(text: str, allowed: set[str] | None = None) -> list[str]:
        chosen = [x.strip().lower() for x in text.split(",") if x.strip()]
        wrong = [x for x in chosen if allowed is not None and x not in allowed]
        if wrong:
            parser.error(f"unknown {', '.join(wrong)} (choose from {', '.join(sorted(allowed))})")
        return chosen

    args.sizes = items(args.sizes)
    for size in args.sizes:
        try:
            datasets.parse_size(size)
        except ValueError as exc:
            parser.error(str(exc))
    args.backends = items(args.backends, {"sqlite", "postgresql"})
    args.transports = items(args.transports, {"outbox", "smtp"})
    args.parts = items(args.parts, {"stages", "run"})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    machine = machine_info(args.backends)
    log(
        f"{machine['cpu_count']} × {machine['cpu_model']}, Python {machine['python']}, "
        f"SQLite {machine['sqlite']}, PostgreSQL {machine['postgresql'] or '-'}"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = args.json or RESULTS_DIR / f"bench-{stamp}.json"
    results: dict[str, Any] = {
        "machine": machine,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "as_of": datasets.AS_OF.isoformat(),
        "layout": benchconfig.WIDE_LAYOUT if args.layouts == "wide" else "config/cobranca.yaml",
        "targets": {
            "ratio": RATIO_TARGET,
            "peak_rss_mb": RSS_TARGET_MB,
            "rss_growth": RSS_GROWTH_TARGET,
            "outbox": f"{OUTBOX_LETTERS} letters in {OUTBOX_SECONDS:.0f} s",
        },
        "runs": [],
    }

    def save() -> None:
        results["wall_s"] = time.perf_counter() - started
        results["checks"] = checks(results["runs"])
        out_path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")

    try:
        for size in args.sizes:
            for backend in args.backends:
                dataset = datasets.ensure_dataset(backend, size, log, regenerate=args.regenerate)
                if args.generate_only:
                    continue
                log(
                    f"{backend} {size}: benchmarking ({dataset.open_titles:,} open títulos, "
                    f"{dataset.customers:,} customers)"
                )
                entry = bench_one(args, dataset)
                results["runs"].append(entry)
                save()
                log(f"{backend} {size}: done in {entry['wall_s']:.0f} s")
    finally:
        empty_trash()
    if args.generate_only:
        log(f"databases ready in {time.perf_counter() - started:.0f} s")
        return 0
    save()
    if results["runs"]:
        print()
        print(table(results["checks"]))
        print()
    log(f"total {results['wall_s']:.0f} s; results: {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
