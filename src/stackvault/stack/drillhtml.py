"""The drill's HTML page (stack layer): `render_html` turns a `DrillResult` into one
self-contained page - inline CSS and an inline SVG timeline of the phases, no script, no
external resource - that any browser shows without network access."""

from __future__ import annotations

from html import escape

from stackvault.records.drill import DrillResult

_COLOURS = {
    "snapshot": "#6c8ebf",
    "files": "#82b366",
    "databases": "#d6b656",
    "start": "#9673a6",
    "healthy": "#2e7d32",
    "probes": "#00897b",
    "cleanup": "#9e9e9e",
}
_STATUS = {"pass": "#2e7d32", "fail": "#c62828", "skipped": "#8d6e63"}


def render_html(result: DrillResult) -> str:
    """The page: verdict, RTO against the target, RPO achieved, the outbound settings
    emptied, the timeline, the probes, the cleanup and the notices."""
    verdict = "PASSED" if result.passed else result.result.upper()
    colour = "#2e7d32" if result.passed else "#c62828"
    rto = f"{result.rto_s:.1f} s" if result.rto_s is not None else "not reached"
    target = f"{result.rto_target_s:.0f} s" if result.rto_target_s is not None else "none"
    met = {True: "met", False: "MISSED", None: "-"}[result.rto_met]
    rpo = f"{result.rpo_achieved_s:.0f} s" if result.rpo_achieved_s is not None else "-"
    rows = "".join(
        f"<tr><td style='color:{_STATUS[p.status]}'><b>{p.status}</b></td>"
        f"<td>{escape(p.name)}</td><td>{escape(p.message)}</td></tr>"
        for p in result.probes
    )
    phases = "".join(
        f"<tr><td>{escape(p.name)}</td><td>{escape(p.group)}</td><td>{p.start_s:.2f}</td>"
        f"<td>{p.seconds:.2f}</td><td>{p.status}</td></tr>"
        for p in result.phases
    )
    notices = "".join(f"<li>{escape(n)}</li>" for n in result.notices)
    blanked = ", ".join(escape(b) for b in result.blanked) or "none"
    removed = ", ".join(escape(r) for r in result.cleanup.removed) or "nothing"
    cleanup = "ok" if result.cleanup.ok else f"FAILED: {escape(result.cleanup.error or '')}"
    error = result.summary_error()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>stackvault drill {escape(result.job)}: {verdict}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}}th{{background:#f4f4f4}}.verdict{{color:{colour}}}
.figures td:first-child{{font-weight:bold}}svg text{{font-size:12px}}
</style></head><body>
<h1>Restore drill of job {escape(result.job)}: <span class="verdict">{verdict}</span></h1>
{f"<p><b>Why:</b> {escape(error)}</p>" if error else ""}
<table class="figures">
<tr><td>snapshot</td><td>{escape(result.snapshot or "-")} of project {escape(result.project)}
 ({result.snapshot_time.isoformat() if result.snapshot_time else "-"})</td></tr>
<tr><td>drilled as</td><td>{escape(result.drill_project) or "-"}</td></tr>
<tr><td>started / ended</td><td>{result.started.isoformat()} / {result.ended.isoformat()}</td></tr>
<tr><td>measured RTO</td><td>{rto} (target {target}: {met})</td></tr>
<tr><td>RPO achieved</td><td>{rpo} (the restore point's age when the drill started)</td></tr>
<tr><td>outbound settings emptied</td><td>{blanked}</td></tr>
<tr><td>cleanup</td><td>{cleanup}; removed {removed}</td></tr>
</table>
<h2>Timeline</h2>
{_timeline(result)}
<table><tr><th>phase</th><th>group</th><th>start (s)</th><th>seconds</th><th>status</th></tr>
{phases}</table>
<h2>Probes</h2>
<table><tr><th>result</th><th>probe</th><th>message</th></tr>{rows}</table>
{f"<h2>Notices</h2><ul>{notices}</ul>" if notices else ""}
<p><small>drill {escape(result.drill_id)}</small></p>
</body></html>
"""


def _timeline(result: DrillResult) -> str:
    """An SVG bar per phase on a common time axis."""
    phases = result.phases
    end = max([p.end_s for p in phases] + [0.001])
    width, label_w, row = 900, 170, 22
    scale = (width - label_w - 20) / end
    height = row * len(phases) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="timeline of the drill phases">'
    ]
    for i, p in enumerate(phases):
        y = 10 + i * row
        x = label_w + p.start_s * scale
        w = max(2.0, (p.end_s - p.start_s) * scale)
        fill = "#c62828" if p.status == "failed" else _COLOURS.get(p.group, "#607d8b")
        parts.append(f'<text x="4" y="{y + 14}">{escape(p.name)}</text>')
        parts.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 6}" fill="{fill}">'
            f"<title>{escape(p.name)}: {p.seconds:.2f} s from {p.start_s:.2f} s</title></rect>"
        )
        parts.append(f'<text x="{x + w + 4:.1f}" y="{y + 14}" fill="#555">{p.seconds:.1f} s</text>')
    axis_y = height - 20
    parts.append(
        f'<line x1="{label_w}" y1="{axis_y}" x2="{width - 20}" y2="{axis_y}" stroke="#999"/>'
    )
    for k in range(6):
        t = end * k / 5
        x = label_w + t * scale
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 14}" fill="#555">{t:.0f} s</text>')
    if result.rto_s is not None:
        x = label_w + result.rto_s * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{axis_y}" stroke="#c62828" '
            f'stroke-dasharray="4 3"><title>RTO {result.rto_s:.1f} s</title></line>'
        )
    parts.append("</svg>")
    return "".join(parts)
