"""`testbed report r.json`: a timeline of a run, as a PNG and a self-contained HTML page.

One lane per VM: echo replies received per 10 ms, gaps shaded, steps as bands, QMP events and
migration states as markers, and the guest kernel's failover messages (from dmesg) as markers."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

QMP_MARKERS = {"DEVICE_DELETED", "FAILOVER_NEGOTIATED", "UNPLUG_PRIMARY", "MIGRATION"}
DMESG_RE = re.compile(r"^\[\s*(\d+\.\d+)\] (.*(failover|Link is Up|Link is Down).*)$")


def _qmp_events(artifacts_dir: Path, vm: str) -> list[dict]:
    events = []
    for path in sorted(artifacts_dir.glob(f"{vm}*/qmp-events.jsonl")):
        for line in path.read_text().splitlines():
            e = json.loads(line)
            if e["event"] in QMP_MARKERS and not (e["event"] == "DEVICE_DELETED" and "device" not in e["data"]):
                label = e["data"].get("status") or e["data"].get("device") or e["data"].get("device-id") or ""
                events.append({"t": e["t"], "label": f"{e['event']} {label}".strip(), "machine": path.parent.name})
    return events


def _dmesg_markers(report: dict, vm: str) -> list[dict]:
    info = report["vms"].get(vm, {})
    offset = info.get("boot", {}).get("guest_clock_offset_s")
    path = Path(info.get("artifacts", {}).get("dmesg", ""))
    if offset is None or not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if m := DMESG_RE.match(line):
            out.append({"t": float(m.group(1)) + offset, "label": m.group(2)[:90]})
    return out


def render(report_path: Path, png: Path | None = None, html_path: Path | None = None) -> tuple[Path, Path]:
    report = json.loads(report_path.read_text())
    png = png or report_path.with_suffix(".png")
    html_path = html_path or report_path.with_suffix(".html")
    artifacts = Path(report["artifacts_dir"])
    vms = list(report["vms"]) or ["(no VM)"]
    end = max([report.get("duration_s", 0)] + [s.get("ended_s") or 0 for s in report["steps"]])
    fig, axes = plt.subplots(len(vms), 1, figsize=(16, 4.8 * len(vms)), squeeze=False, sharex=True)
    for ax, vm in zip(axes[:, 0], vms):
        for i, step in enumerate(report["steps"]):
            ax.axvspan(step["started_s"], step.get("ended_s") or end, color="#000000" if i % 2 else "#888888",
                       alpha=0.05, lw=0)
            ax.text(step["started_s"], 1.01 + 0.07 * (i % 3), f"{step['index']} {step['action']}", fontsize=7,
                    transform=ax.get_xaxis_transform(), va="bottom", ha="left", rotation=20,
                    color="black" if step["ok"] else "red")
        ymax = 1.0
        for t in report.get("traffic", []):
            if t["vm"] != vm or t["probe"] != "ping" or "timeline" not in t:
                continue
            tl = t["timeline"]
            xs = [tl["start_s"] + i * tl["bin_s"] for i in range(len(tl["received"]))]
            ax.step(xs, tl["received"], where="post", lw=0.7, label=f"{t['pair']}: replies per 10 ms")
            ymax = max(ymax, max(tl["received"], default=1))
            for g in t["gaps"]:
                ax.axvspan(g["start_s"], g["end_s"], color="red", alpha=0.3, lw=0)
                if g["ms"] >= 50:
                    ax.text((g["start_s"] + g["end_s"]) / 2, ymax * 1.6, f"{g['ms']:.0f} ms\n{g['lost']} lost",
                            color="red", fontsize=7, ha="center")
        for e in _qmp_events(artifacts, vm):
            ax.axvline(e["t"], color="tab:blue", ls="--", lw=0.8)
            ax.text(e["t"], ymax * 2.3, e["label"], rotation=90, fontsize=6, color="tab:blue", va="top")
        for d in _dmesg_markers(report, vm):
            ax.plot([d["t"]], [ymax * 1.2], marker="v", color="tab:green", ms=5)
        ax.plot([], [], marker="v", color="tab:green", ls="", label="guest dmesg: failover / link messages")
        ax.plot([], [], color="tab:blue", ls="--", label="QMP events")
        ax.axvspan(0, 0, color="red", alpha=0.3, label="gaps")
        ax.set_ylim(0, ymax * 2.4)
        ax.set_ylabel(f"{vm}\nreplies / 10 ms")
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7)
    axes[-1, 0].set_xlabel("run time (s)")
    axes[-1, 0].set_xlim(0, end)
    fig.suptitle(f"{report['scenario']}: {'passed' if report['passed'] else 'FAILED'} in {report['duration_s']:.1f} s",
                 y=0.995)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    png.write_bytes(buf.getvalue())
    html_path.write_text(_html(report, base64.b64encode(buf.getvalue()).decode()))
    return png, html_path


def _html(report: dict, png_b64: str) -> str:
    rows = "".join(
        f"<tr class={'ok' if s['ok'] else 'bad'}><td>{s['index']}</td><td>{html.escape(s['action'])}</td>"
        f"<td>{s['started_s']:.3f}</td><td>{s.get('ended_s') or 0:.3f}</td>"
        f"<td>{html.escape(s.get('error') or '')}</td></tr>" for s in report["steps"])
    gaps = "".join(
        f"<tr><td>{html.escape(t['vm'])}/{html.escape(t['pair'])}</td><td>{g['start_s']:.3f}</td><td>{g['ms']}</td>"
        f"<td>{g['lost']}</td><td>{g['step']} {html.escape(str(g['step_action']))}</td></tr>"
        for t in report.get("traffic", []) if t["probe"] == "ping" for g in t["gaps"])
    migrations = "".join(
        f"<tr><td>{html.escape(m['vm'])}</td><td>{m.get('status')}</td><td>{m.get('total_time_ms')}</td>"
        f"<td>{m.get('downtime_ms')}</td><td>{m.get('wait_unplug_ms')}</td></tr>" for m in report.get("migrations", []))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(report['scenario'])}</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}} .bad{{background:#fdd}} img{{max-width:100%}}</style>
</head><body><h1>{html.escape(report['scenario'])}: {'passed' if report['passed'] else 'FAILED'}</h1>
<p>{html.escape(json.dumps(report.get('host') or {}))}</p>
<img alt="timeline" src="data:image/png;base64,{png_b64}">
<h2>Steps</h2><table><tr><th>#</th><th>action</th><th>start s</th><th>end s</th><th>error</th></tr>{rows}</table>
<h2>Gaps</h2><table><tr><th>probe</th><th>start s</th><th>ms</th><th>lost</th><th>step</th></tr>{gaps}</table>
<h2>Migrations</h2><table><tr><th>vm</th><th>status</th><th>total ms</th><th>downtime ms</th><th>wait-unplug ms</th></tr>{migrations}</table>
</body></html>
"""
