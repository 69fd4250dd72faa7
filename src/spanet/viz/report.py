"""One HTML page per run: config, metrics, CMC, training curves, ranked lists and CAM grids.

`build_report(run_dir)` reads what a run folder holds (all optional) and writes `run_dir/report.html` plus its
figures in `run_dir/report_files/`. Images are linked by relative paths that exist when the page is written, so
the folder can be copied or zipped as a whole. Every piece of text and every file name is HTML-escaped; whatever
is missing or unreadable is listed at the top of the page instead of failing.

It reads the run folder's files (`spanet.run_dir` names them): config.yaml, log.jsonl, eval/metrics.json,
eval/ranked/*.png, cam/*.png, cam/spread.json.
"""

from __future__ import annotations

import datetime
import html
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from spanet.errors import SpanetError
from spanet.outputs import write_text
from spanet.run_dir import (
    ANALYSIS_DIR,
    WORST_DIR,
    CAM_DIR,
    CONFIG_FILE,
    EVAL_DIR,
    LOG_FILE,
    METRICS_FILE,
    RANKED_DIR,
    REPORT_FILE,
    REPORT_FILES_DIR,
    read_log,
    read_metrics,
    read_spread,
)

__all__ = ["build_report", "METRIC_COLUMNS"]

METRIC_COLUMNS = ("rank1", "rank5", "rank10", "mAP", "mINP")

# After the page loads, count <img> elements that did not decode; tests (and readers) see the result in the DOM.
_IMAGE_CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (im) { return !im.complete || im.naturalWidth === 0; });
  var el = document.getElementById("image-check");
  el.setAttribute("data-total", String(images.length));
  el.setAttribute("data-broken", String(broken.length));
  el.setAttribute("data-status", "done");
  if (broken.length) {
    el.textContent = broken.length + " of " + images.length + " images failed to load.";
    el.style.display = "block";
  }
});
</script>
"""

_STYLE = """
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0; } th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; max-height: 30em; }
.missing { background: #fff6e0; border: 1px solid #e8c66a; padding: 0.6em 1em; }
.figs img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0; display: block; }
.figs figure { margin: 0 0 1em 0; } figcaption { font-size: 0.8em; color: #555; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.grid figure { margin: 0; } .grid img { max-height: 520px; }
#image-check { display: none; color: #a00; font-weight: bold; }
.meta { color: #666; font-size: 0.9em; }
</style>
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _src(path: Path, base: Path) -> str:
    """A relative, URL-quoted, HTML-escaped reference to `path` from the page in `base`."""
    return _esc(quote(Path(os.path.relpath(path, base)).as_posix()))


def _readable_png(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # any decoding problem means the browser would show a broken image
        return False


def _fmt_metric(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    return f"{value * 100:.2f}" if value <= 1.0 else f"{value:.2f}"


def _metrics_section(metrics: Mapping) -> str:
    variants = [(name, metrics[name]) for name in ("plain", "reranked") if isinstance(metrics.get(name), Mapping)]
    if not variants:
        return "<p>metrics.json holds neither a \"plain\" nor a \"reranked\" table.</p>"
    extra = sorted({k for _, m in variants for k, v in m.items()
                    if k not in METRIC_COLUMNS and isinstance(v, (int, float))})
    columns = [c for c in METRIC_COLUMNS if any(c in m for _, m in variants)] + extra
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><th>{_esc(name)}</th>" + "".join(f'<td class="num">{_esc(_fmt_metric(m.get(c)))}</td>' for c in columns)
        + "</tr>" for name, m in variants)
    source = ", ".join(f"{key}: {metrics[key]}" for key in ("checkpoint", "dataset", "kind", "flip") if key in metrics)
    notes = "".join(f" {metrics[key]}." for key in ("protocol", "cross_domain") if metrics.get(key))
    notes += "".join(f" {note}." for note in metrics.get("notes") or [] if isinstance(note, str))
    return (f"<table><tr><th></th>{head}</tr>{body}</table>"
            f"<p class=\"meta\">{_esc(source + '. ' if source else '')}In percent. \"reranked\" = k-reciprocal "
            f"re-ranking (Zhong et al. 2017).{_esc(notes)}</p>")


def _img(path: Path, base: Path, caption: str) -> str:
    src = _src(path, base)
    return (f'<figure><a href="{src}"><img src="{src}" alt="{_esc(caption)}" loading="eager"></a>'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _spread_section(spread: Mapping) -> str:
    summary = spread.get("summary")
    if not isinstance(summary, Sequence) or not summary:
        return "<p>cam/spread.json has no summary rows.</p>"
    measures = [k for k in ("area_above_half", "entropy", "rows_above_half") if any(k in r for r in summary)]
    head = "".join(f"<th>{_esc(m)} (mean)</th>" for m in measures)
    rows = "".join(
        f"<tr><td>{_esc(r.get('stage', '?'))}</td><td>{_esc(r.get('variant', '?'))}</td>"
        f"<td class=\"num\">{_esc(r.get('count', ''))}</td>"
        + "".join(f'<td class="num">{_esc(f"{r[m]:.3f}" if isinstance(r.get(m), (int, float)) else "–")}</td>'
                  for m in measures) + "</tr>"
        for r in summary if isinstance(r, Mapping))
    note = spread.get("class_note") or ""
    variants = spread.get("variants") or {}
    legend = "; ".join(f"{_esc(k)} = {_esc(v)}" for k, v in variants.items()) if isinstance(variants, Mapping) else ""
    return (f"<table><tr><th>stage</th><th>variant</th><th>images</th>{head}</tr>{rows}</table>"
            f"<p class=\"meta\">Higher = more spread out. area_above_half: fraction of the image where the "
            f"normalised CAM is at least half its maximum; entropy: normalised entropy of the CAM as a distribution "
            f"(1 = uniform); rows_above_half: fraction of image rows reaching half the maximum. {legend}. "
            f"{_esc(note)}</p>")


def build_report(run_dir: str | Path, *, out_path: str | Path | None = None) -> Path:
    """Write `run_dir/report.html` (or `out_path`, which must lie inside run_dir) and return its path."""
    import yaml

    from spanet.viz.figures import plot_cmc, plot_training_curves

    run = Path(run_dir)
    if not run.is_dir():
        raise SpanetError(f"report: run folder {run} does not exist; pass the folder `spanet train` wrote")
    run = run.resolve()
    if not any((run / name).exists() for name in (CONFIG_FILE, LOG_FILE, EVAL_DIR, CAM_DIR)):
        raise SpanetError(
            f"report: {run} holds nothing spanet wrote ({CONFIG_FILE}, {LOG_FILE}, {EVAL_DIR}/, {CAM_DIR}/); pass the "
            "folder of a `spanet train` run"
        )
    page = Path(out_path).resolve() if out_path else run / REPORT_FILE
    if run not in page.parents:
        raise SpanetError(f"report: the page {page} must lie inside the run folder {run} (images are linked relatively)")
    base = page.parent
    files = run / REPORT_FILES_DIR
    files.mkdir(exist_ok=True)
    missing: list[str] = []
    sections: list[str] = []

    config_path = run / CONFIG_FILE
    if config_path.is_file():
        text = config_path.read_text(encoding="utf-8", errors="replace")
        try:
            yaml.safe_load(text)
        except yaml.YAMLError:
            missing.append("config.yaml is not valid YAML (shown as text)")
        sections.append(f"<h2>Run config</h2><pre>{_esc(text)}</pre>")
    else:
        missing.append("config.yaml (the resolved training config) — not found")

    metrics: Mapping = {}
    if (run / EVAL_DIR / METRICS_FILE).is_file():
        try:
            metrics = read_metrics(run / EVAL_DIR)
        except SpanetError as exc:
            missing.append(str(exc).replace(str(run) + os.sep, ""))
        if metrics:
            sections.append("<h2>Metrics</h2>" + _metrics_section(metrics))
            cmc = metrics.get("cmc")
            curves = {k: v for k, v in cmc.items() if isinstance(v, list) and v} if isinstance(cmc, Mapping) else {}
            if curves:
                sections.append('<h2>CMC curve</h2><div class="figs">'
                                + _img(plot_cmc(curves, out_path=files / "cmc.png"), base, "CMC") + "</div>")
            else:
                missing.append("CMC values (\"cmc\" in eval/metrics.json)")
    else:
        missing.append("eval/metrics.json (run `spanet evaluate`) — no metrics table or CMC curve")

    log_path = run / LOG_FILE
    if log_path.is_file():
        records, problems = read_log(log_path)
        missing.extend(problems)
        figures = plot_training_curves(records, out_dir=files)
        captions = {"losses": "losses per head", "lr": "learning rate", "eval": "rank-1 / mAP during training",
                    "attention": "attention spread per SA layer (effective positions / H·W)"}
        if figures:
            sections.append('<h2>Training curves</h2><div class="figs grid">'
                            + "".join(_img(p, base, captions[k]) for k, p in figures.items()) + "</div>")
        else:
            missing.append("training curves: log.jsonl has no step/epoch/eval records with numbers")
    else:
        missing.append("log.jsonl (training log) — no training curves")

    for title, folder, pattern, hint in (
        ("Ranked lists", run / EVAL_DIR / RANKED_DIR, "*.png", "run `spanet evaluate ... --visualize K`"),
        ("Class activation maps", run / CAM_DIR, "*.png", "run `spanet cam --out RUN_DIR/cam ...`"),
        ("Evaluation analysis", run / EVAL_DIR / ANALYSIS_DIR, "*.png", None),  # camera pairs, distance histograms
        ("Worst queries", run / EVAL_DIR / WORST_DIR, "*.png", None),
    ):
        if hint is None and not folder.is_dir():
            continue  # optional sections: absent in older evaluation folders
        pngs = sorted(folder.glob(pattern)) if folder.is_dir() else []
        good = [p for p in pngs if _readable_png(p)]
        missing.extend(f"{p.relative_to(run).as_posix()} is not a readable PNG; left out" for p in pngs if p not in good)
        if not good:
            missing.append(f"{title.lower()} ({folder.relative_to(run).as_posix()}/*.png; {hint})")
            continue
        body = ""
        if folder.name == CAM_DIR:
            try:
                body = _spread_section(read_spread(folder))
            except SpanetError as exc:
                missing.append(f"CAM spread measures: {str(exc).replace(str(run) + os.sep, '')}")
        sections.append(f"<h2>{_esc(title)}</h2>{body}<div class=\"figs grid\">"
                        + "".join(_img(p, base, p.name) for p in good) + "</div>")

    # a small table of contents: every section heading gets an id
    titles = re.findall(r"<h2>(.*?)</h2>", "".join(sections))
    anchors = {t: "sec-" + re.sub(r"[^a-z0-9]+", "-", html.unescape(t).lower()).strip("-") for t in titles}
    sections = [re.sub(r"<h2>(.*?)</h2>", lambda m: f'<h2 id="{anchors[m[1]]}">{m[1]}</h2>', part) for part in sections]
    toc = ("<p class=\"meta\">" + " · ".join(f'<a href="#{anchors[t]}">{t}</a>' for t in titles) + "</p>"
           if titles else "")
    missing_html = ("<div class=\"missing\"><b>Not in this report:</b><ul>"
                    + "".join(f"<li>{_esc(m)}</li>" for m in missing) + "</ul></div>") if missing else ""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    document = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>spanet report: {_esc(run.name)}</title>{_STYLE}</head><body>"
        f"<h1>spanet run report: {_esc(run.name)}</h1>"
        f"<p class=\"meta\">{_esc(run)} — generated {_esc(stamp)}</p>"
        "<div id=\"image-check\" data-status=\"pending\"></div>"
        f"{toc}{missing_html}{''.join(sections)}{_IMAGE_CHECK_SCRIPT}</body></html>\n"
    )
    page.parent.mkdir(parents=True, exist_ok=True)
    write_text(page, document)
    return page
