"""Draw deploy/grafana/dashboards/refund-worker.json from a real Prometheus, without Grafana.

Grafana is not packaged for Debian and cannot be installed offline, so this reads the dashboard's
own panels (titles, grid positions, units, every target's PromQL and legend) and asks Prometheus'
HTTP API for exactly those queries (``query_range`` for graphs, ``query`` for stats), with
``$__rate_interval`` replaced as Grafana would (four scrape intervals, at least) and ``$shop`` as
"All". It writes one HTML page of inline SVG (no script, nothing fetched) and, with ``--png``,
screenshots it with headless Chromium.

    python bench/render_dashboard.py --prometheus http://127.0.0.1:9090 --start T0 --end T1 \
        --html /tmp/dashboard.html --png docs/images/grafana-dashboard.png
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy/grafana/dashboards/refund-worker.json"
COLUMN = 58  # px per grid column (24 columns)
ROW = 34  # px per grid row
COLORS = ["#73bf69", "#f2495c", "#fade2a", "#5794f2", "#ff9830", "#b877d9", "#8ab8ff", "#ffb357"]
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[Any]:
    response = httpx.get(f"{prometheus}/api/v1/query_range", params={
        "query": expr, "start": start, "end": end, "step": step}, timeout=30)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def query(prometheus: str, expr: str, at: float) -> list[Any]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr, "time": at},
                         timeout=30)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def legend(template: str, labels: dict[str, str]) -> str:
    return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), template) or "value"


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "–"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
    if unit == "reqps":
        return f"{value:.2f}/s" if value < 10 else f"{value:.0f}/s"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def timeseries_svg(series: list[tuple[str, list[tuple[float, float]]]], unit: str,
                   width: int, height: int, start: float, end: float,
                   thresholds: list[dict[str, Any]]) -> str:
    left, right, top, bottom = 58, 8, 6, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, points in series for _, v in points if not math.isnan(v)]
    top_value = max([*values, 0.0]) or 1.0
    for step in thresholds:
        if step.get("value") is not None and step["value"] <= top_value * 1.5:
            top_value = max(top_value, step["value"])
    top_value *= 1.1

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * plot_w

    def y(v: float) -> float:
        return top + plot_h - v / top_value * plot_h

    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):
        v = top_value * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     'stroke="#2c3235" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" '
                     f'class="tick">{html.escape(fmt(v, unit))}</text>')
    for i in range(5):
        t = start + (end - start) * i / 4
        label = time.strftime("%H:%M:%S", time.gmtime(t))
        parts.append(f'<text x="{x(t):.1f}" y="{height - 4}" text-anchor="middle" '
                     f'class="tick">{label}</text>')
    for step in thresholds:
        if step.get("value") is not None and step["color"] in ("red", "orange"):
            parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(step["value"]):.1f}" '
                         f'y2="{y(step["value"]):.1f}" stroke="#f2495c" stroke-dasharray="4 3" '
                         'stroke-width="1"/>')
    for index, (_, points) in enumerate(series):
        color = COLORS[index % len(COLORS)]
        segments: list[list[str]] = [[]]
        for t, v in points:
            if math.isnan(v):
                segments.append([])
                continue
            segments[-1].append(f"{x(t):.1f},{y(v):.1f}")
        for segment in segments:
            if len(segment) > 1:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" '
                             f'points="{" ".join(segment)}"/>')
            elif segment:
                cx, cy = segment[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
    parts.append("</svg>")
    return "".join(parts)


def grafana_expr(expr: str, rate_interval: str) -> str:
    """A panel's PromQL as Grafana sends it: its variables replaced (every shop selected)."""
    return expr.replace("$__rate_interval", rate_interval).replace("$shop", ".*")


def render(prometheus: str, start: float, end: float, step: float, rate_interval: str,
           note: str) -> str:
    dashboard = json.loads(DASHBOARD.read_text())
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    body = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        box = (f'left:{grid["x"] * COLUMN + 8}px;top:{grid["y"] * ROW + 64}px;'
               f'width:{grid["w"] * COLUMN - 8}px;height:{grid["h"] * ROW - 8}px')
        if panel["type"] == "row":
            body.append(f'<div class="row" style="{box}">{html.escape(panel["title"])}</div>')
            continue
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        thresholds = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
        width, height = grid["w"] * COLUMN - 8, grid["h"] * ROW - 8
        inner = ""
        if panel["type"] == "stat":
            cells = []
            for target in panel["targets"]:
                expr = grafana_expr(target["expr"], rate_interval)
                for result in query(prometheus, expr, end):
                    value = float(result["value"][1])
                    color = "#37872d"
                    for step_ in thresholds:
                        if step_.get("value") is not None and value >= step_["value"]:
                            color = {"orange": "#c4520e", "red": "#c4162a"}.get(
                                step_["color"], color)
                    name = legend(target["legendFormat"], result["metric"])
                    cells.append(f'<div class="stat" style="background:{color}">'
                                 f'<div class="statname">{html.escape(name)}</div>'
                                 f'<div class="statvalue">{html.escape(fmt(value, unit))}</div>'
                                 "</div>")
            inner = f'<div class="stats">{"".join(cells)}</div>'
        else:
            series: list[tuple[str, list[tuple[float, float]]]] = []
            for target in panel["targets"]:
                expr = grafana_expr(target["expr"], rate_interval)
                for result in query_range(prometheus, expr, start, end, step):
                    points = [(float(t), float(v)) for t, v in result["values"]]
                    series.append((legend(target["legendFormat"], result["metric"]), points))
            series.sort(key=lambda item: item[0])
            legend_html = "".join(
                f'<span class="key"><i style="background:{COLORS[i % len(COLORS)]}"></i>'
                f"{html.escape(name)}</span>" for i, (name, _) in enumerate(series))
            if not series:
                legend_html = '<span class="key">no data in this run</span>'
            legend_rows = max(1, math.ceil(len(series) / max(1, grid["w"] // 3)))
            inner = (timeseries_svg(series, unit, width - 12, height - 36 - 16 * legend_rows,
                                    start, end, thresholds)
                     + f'<div class="legend">{legend_html}</div>')
        body.append(f'<div class="panel" style="{box}"><div class="title">'
                    f'{html.escape(panel["title"])}</div>{inner}</div>')
    window = (f'{time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start))} – '
              f'{time.strftime("%H:%M:%S", time.gmtime(end))} UTC')
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body{{margin:0;background:#111217;color:#ccccdc;font:12px Inter,Helvetica,Arial,sans-serif}}
header{{position:absolute;left:8px;top:8px;right:8px;height:48px}}
header h1{{font-size:17px;margin:0 0 4px;color:#fff}} header p{{margin:0;color:#8e8e8e}}
.panel{{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:3px;
padding:6px;box-sizing:border-box;overflow:hidden}}
.row{{position:absolute;font-size:14px;font-weight:600;color:#d8d9da;padding-top:8px}}
.title{{font-weight:600;color:#d8d9da;margin-bottom:4px}} .tick{{fill:#8e8e8e;font-size:10px}}
.legend{{margin-top:2px}}
.key{{margin-right:10px;white-space:nowrap;display:inline-block;line-height:16px}}
.key i{{display:inline-block;width:12px;height:3px;margin:0 4px 3px 0}}
.stats{{display:flex;gap:6px;height:calc(100% - 22px)}}
.stat{{flex:1;border-radius:3px;display:flex;flex-direction:column;justify-content:center;
align-items:center;color:#fff}} .statname{{font-size:13px}}
.statvalue{{font-size:40px;font-weight:500}}
</style></head><body><header><h1>refund-worker</h1><p>{html.escape(note)} · {window}</p></header>
{"".join(body)}<div style="position:absolute;top:{bottom * ROW + 70}px;height:1px"></div>
</body></html>"""


def screenshot(page: Path, png: Path, width: int, height: int) -> None:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium is not installed (apt-get install -y chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dashboard-chromium-") as profile:
        subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--user-data-dir={profile}",
                        "--no-first-run", "--disable-extensions", "--disable-sync",
                        f"--window-size={width},{height}", f"--screenshot={png}",
                        page.as_uri()], check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--start", type=float, required=True, help="unix time")
    parser.add_argument("--end", type=float, required=True, help="unix time")
    parser.add_argument("--step", type=float, default=5.0)
    parser.add_argument("--rate-interval", default="20s", help="$__rate_interval")
    parser.add_argument("--note", default="deploy/grafana/dashboards/refund-worker.json")
    parser.add_argument("--html", type=Path, required=True)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    page = render(args.prometheus, args.start, args.end, args.step, args.rate_interval, args.note)
    args.html.write_text(page)
    if args.png:
        dashboard = json.loads(DASHBOARD.read_text())
        bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
        screenshot(args.html.resolve(), args.png, 24 * COLUMN + 16, bottom * ROW + 80)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
