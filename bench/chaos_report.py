"""The chaos run's verdict and its printed summary, from the report bench/chaos.py builds."""

from __future__ import annotations

from typing import Any

from bench.chaos_watch import TERMINAL


def failures(report: dict[str, Any], submitted: int) -> list[str]:
    batches = report["batches"]
    found = []
    if len(batches) < submitted:
        found.append(f"{submitted} batches submitted, {len(batches)} listed")
    found += [f"{b['id']} is {b['status']}" for b in batches if b["status"] not in TERMINAL]
    for key in ("lost", "duplicated", "unexpected"):
        if total := sum(b[key] for b in batches):
            found.append(f"{total} lines {key}")
    found += [f"{b['id']}: {problem}" for b in batches for problem in b["counts"]]
    hooks = report["webhooks"]
    found += [f"no webhook for {b}" for b in hooks["missing"]] + [f"two events for {b}" for b in hooks["two_events"]]
    found += [f"counter fell: {fall}" for fall in report["metrics"]["falls"]]
    if report["metrics"]["requests_total"] != report["lines"]:
        found.append(f"batchsite_requests_total is {report['metrics']['requests_total']}, lines {report['lines']}")
    found += [f"left running: {o}" for o in report["orphans"]] + report["submit_errors"]
    if report["bad_webhook_posts"]:
        found.append(f"{report['bad_webhook_posts']} webhook POSTs with a bad signature")
    if not report["quiet"]:
        found.append("no quiet before --quiet-timeout")
    return found


def summary(report: dict[str, Any], command: str) -> str:
    b = report["batches"]
    kills = ", ".join(f"{kind} {n}" for kind, n in report["kills"].items())
    return "\n".join(
        [
            f"command: {command}",
            f"kills survived: {report['kills_total']} ({kills})",
            f"batches: {len(b)} ({', '.join(sorted({x['status'] for x in b}))}), lines: {report['lines']}",
            f"lost: {sum(x['lost'] for x in b)}, duplicated: {sum(x['duplicated'] for x in b)}, "
            f"unexpected: {sum(x['unexpected'] for x in b)}",
            f"webhooks: {len(b) - len(report['webhooks']['missing'])}/{len(b)} delivered, "
            f"{report['webhooks']['duplicates']} duplicate POSTs; receiver down {report['receiver_outages_s']} s",
            f"metrics: {report['metrics']['scrapes']} scrapes, {len(report['metrics']['falls'])} falls, "
            f"requests_total {report['metrics']['requests_total']:.0f}, "
            f"lines rerun after a kill {report['metrics']['lines_rerun']:.0f}",
            f"inside: {report['database']}",
            f"http: {report['http']}; orphans: {len(report['orphans'])}",
            f"wall: {report['wall_seconds']} s (chaos {report['chaos_seconds']} s, "
            f"quiet {report['quiet_after_s']} s after)",
            "result: " + ("OK" if not report["failures"] else "FAILED\n  " + "\n  ".join(report["failures"][:30])),
        ]
    )
