"""The contact sheet of a job's samples: one HTML page, a row per prompt, the saved LoRAs side by side (with the loss
logged at that save), each cell the newest video of that (LoRA, prompt). It lives beside the videos
(`<output>/<name>/samples/index.html`, links relative, so `runner pull` brings a working page) and is rebuilt from a
manifest (`samples.json`) that every `runner sample` run extends: earlier runs' epochs and prompts stay on it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path, PurePosixPath

from runner.executors import Executor

SHEET = "index.html"
MANIFEST = "samples.json"
MARK = "<!-- runner contact sheet -->"  # only a page with this line is replaced


def update(executor: Executor, job_folder: PurePosixPath, loras: list[tuple[str, str, float | None]], prompts: dict[str, str]) -> PurePosixPath:
    """Add this run's LoRAs (key, label, loss) and prompts (id → text) to the manifest and write the page on the
    job's target; returns the page's path there."""
    folder = job_folder / "samples"
    old = json.loads(executor.read_text(Path(folder / MANIFEST)) or "{}")
    manifest = {"loras": old.get("loras", {}), "prompts": old.get("prompts", {})}
    for key, label, loss in loras:
        known = manifest["loras"].get(key, {})
        manifest["loras"][key] = {"label": label, "loss": loss if loss is not None else known.get("loss")}
    manifest["prompts"].update(prompts)
    found = executor.shell.run(["find", str(folder), "-mindepth", "3", "-maxdepth", "3", "-type", "f", "-name", "*.mp4"], timeout=60)
    videos: dict[tuple[str, str], str] = {}
    for path in sorted(found.stdout.split("\n") if found.ok else []):  # names start with the time: the newest last
        if path.startswith(str(folder) + "/"):
            key, pid, _ = PurePosixPath(path).relative_to(folder).parts
            videos[(key, pid)] = f"{key}/{pid}/{PurePosixPath(path).name}"
    page = folder / SHEET
    existing = executor.read_text(Path(page))
    if existing is not None and MARK not in existing:
        page = folder / "contact-sheet.html"  # never replace a page runner did not write
    executor.write_text(Path(folder / MANIFEST), json.dumps(manifest, indent=2) + "\n")
    executor.write_text(Path(page), html_page(job_folder.name, manifest, videos))
    return page


def _order(key: str) -> tuple:
    # epoch0002 < epoch0010 < final; step saves after the epochs
    return (key.startswith("step"), key == "final", key)


def html_page(job: str, manifest: dict, videos: dict[tuple[str, str], str]) -> str:
    keys = sorted(manifest["loras"], key=_order)
    head = "".join(f"<th>{html.escape(manifest['loras'][k]['label'])}<br><small>{_loss(manifest['loras'][k]['loss'])}</small></th>" for k in keys)
    rows = []
    for pid, text in manifest["prompts"].items():
        cells = "".join(
            f'<td><video src="{html.escape(videos[(k, pid)])}" controls loop muted preload="metadata"></video></td>' if (k, pid) in videos
            else "<td class=none>—</td>" for k in keys)
        rows.append(f"<tr><th class=prompt>{html.escape(text)}</th>{cells}</tr>")
    return f"""<!doctype html>
{MARK}
<html><head><meta charset="utf-8"><title>{html.escape(job)}: samples per epoch</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse}} th,td{{border:1px solid #ccc;padding:4px;vertical-align:top}}
th.prompt{{min-width:10em;max-width:16em;text-align:left;font-weight:normal}} video{{width:320px;display:block}} td.none{{color:#999;text-align:center}}</style></head>
<body><h1>{html.escape(job)}</h1><p>One row per prompt, one column per saved LoRA (the loss logged at its save, where known). Made by <code>runner sample</code>.</p>
<table><tr><th>prompt</th>{head}</tr>
{chr(10).join(rows)}
</table></body></html>
"""


def _loss(loss: float | None) -> str:
    return "loss —" if loss is None else f"loss {loss:.4g}"
