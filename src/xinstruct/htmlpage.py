"""Self-contained HTML pages with inlined PNG charts: what the run report and the evaluation report share."""

from __future__ import annotations

import base64
import html
from pathlib import Path


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return path


def img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


# Noto covers every script of the paper's languages; without a font for a script a browser draws boxes.
FONTS = ('system-ui,"Noto Sans","Noto Sans Thai","Noto Sans Devanagari","Noto Sans Bengali","Noto Sans Tamil",'
         '"Noto Naskh Arabic","Noto Sans Arabic",sans-serif')
STYLE = """body{font-family:FONTS;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:14px} td,th{border:1px solid #ddd;padding:4px 8px;
vertical-align:top;text-align:left} th{background:#f4f4f4} img{max-width:100%} .muted{color:#777}
td.sample{max-width:520px;white-space:pre-wrap} .warn{background:#fff4d6;padding:.4em .8em}""".replace("FONTS", FONTS)
# Written into the page by the browser once every image has decoded: what the rendering test reads.
CHECK = """<script>window.addEventListener('load',()=>{const i=[...document.images];
document.body.dataset.images=i.length;document.body.dataset.imagesOk=i.filter(x=>x.complete&&x.naturalWidth>0).length;
});</script>"""


def page(title: str, parts: list[str]) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}{CHECK}</body></html>")
