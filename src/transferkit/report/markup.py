"""HTML building blocks of the report: escaping, number formats, key-value tables, embedded images.

Every string that comes from a result passes through ``esc``; numbers that may be missing or NaN
are shown as an em dash.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .benefit import is_finite


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt_number(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if is_finite(value) else "—"


def fmt_points(value: Any) -> str:
    return f"{100.0 * value:+.1f}" if is_finite(value) else "—"


def img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows if v not in (None, ""))
    return f'<table class="kv">{body}</table>' if body else ""


def code_tag(value: Any) -> str:
    return f"<code>{esc(value)}</code>"
