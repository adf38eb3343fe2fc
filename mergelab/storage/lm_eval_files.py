"""lm-evaluation-harness's result files, written the way its ``EvaluationTracker`` writes them:
``<out>/<model_name_sanitized>/results_<time>.json`` and ``samples_<task>_<time>.jsonl`` beside it
(``<time>`` is an ISO timestamp with ``-`` for ``:``), so ``lm_eval.utils.get_results_filenames``,
``get_sample_results_filenames`` and ``get_latest_filename`` find them."""

from __future__ import annotations

import io
import json
import time
import zipfile
from datetime import datetime
from pathlib import Path


def lm_eval_files(documents: list[dict], when: datetime | None = None) -> dict[str, str]:
    """{relative path: text} of every file :func:`write_lm_eval` writes (for a zip download)."""
    when = when or datetime.now()
    stamp = when.isoformat().replace(":", "-")
    files = {}
    for doc in documents:
        folder = doc["model_name_sanitized"]
        body = {k: v for k, v in doc.items() if k != "samples"}
        body["date"] = time.mktime(when.timetuple())
        files[f"{folder}/results_{stamp}.json"] = json.dumps(body, indent=2, default=str, allow_nan=False)
        for task, rows in doc.get("samples", {}).items():
            files[f"{folder}/samples_{task}_{stamp}.jsonl"] = "".join(
                json.dumps(r, default=str, allow_nan=False) + "\n" for r in rows
            )
    return files


def lm_eval_zip(documents: list[dict]) -> bytes:
    """The files of :func:`write_lm_eval` as one zip archive, in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in lm_eval_files(documents).items():
            z.writestr(name, text)
    return buffer.getvalue()


def write_lm_eval(documents: list[dict], out: Path, when: datetime | None = None) -> list[Path]:
    """Write each model's results document and its samples; returns the files written.

    Args:
        documents: from :func:`mergelab.analysis.lm_eval_results.documents` (``samples`` is taken out
            of each into its own files).
        out: the output folder (created).
        when: the timestamp in the file names (default: now).
    """
    written = []
    for name, text in lm_eval_files(documents, when).items():
        path = Path(out) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
