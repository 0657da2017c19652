"""Prompt sources: txt/csv/jsonl/json files, and the prompt sets bundled with the project."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from sparring.errors import SparringError

PROMPT_COLUMNS = ("prompt", "instruction", "goal", "behavior", "Behavior", "question", "text")


def _pick(row: dict, column: str | None, where: str) -> str:
    if column is not None:
        if column not in row:
            raise SparringError(
                f"{where} has no column '{column}' (it has: {', '.join(map(str, row))})", hint="pass the right --column"
            )
        value = row[column]
    else:
        found = [c for c in PROMPT_COLUMNS if c in row]
        if not found:
            raise SparringError(
                f"{where} has none of the prompt columns {', '.join(PROMPT_COLUMNS)} "
                f"(it has: {', '.join(map(str, row))})",
                hint="name the column with --column",
            )
        value = row[found[0]]
    if not isinstance(value, str):
        raise SparringError(f"{where}: the prompt is {type(value).__name__}, not text")
    return value


def read_prompts(path: str | Path, column: str | None = None) -> list[str]:
    """Read prompts from a .txt (one per line), .csv, .jsonl or .json file.

    Every problem names the file (and line) and says what the file should look like.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SparringError(f"prompt file '{path}' does not exist", hint="check the path")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SparringError(
            f"prompt file '{path}' is not valid UTF-8 (byte {exc.start})", hint="re-save it as UTF-8"
        ) from exc
    suffix = path.suffix.lower()
    prompts: list[str] = []
    if suffix == ".jsonl":
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SparringError(
                    f"{path}:{number} is not valid JSON: {exc.msg}",
                    hint='each line should be an object like {"prompt": "..."}',
                ) from exc
            prompts.append(
                row if isinstance(row, str) else _pick(row if isinstance(row, dict) else {}, column, f"{path}:{number}")
            )
    elif suffix == ".json":
        try:
            rows = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SparringError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
        if not isinstance(rows, list):
            raise SparringError(f"{path} should hold a JSON list of prompts or objects")
        for number, row in enumerate(rows):
            if isinstance(row, list) and row and isinstance(row[0], str):
                row = row[0]
            prompts.append(
                row
                if isinstance(row, str)
                else _pick(row if isinstance(row, dict) else {}, column, f"{path}[{number}]")
            )
    elif suffix == ".csv":
        try:
            reader = csv.DictReader(raw.splitlines(keepends=True))
            for number, row in enumerate(reader, 2):
                prompts.append(_pick(row, column, f"{path}:{number}"))
        except csv.Error as exc:
            raise SparringError(f"{path} is not a valid CSV file: {exc}") from exc
    else:
        prompts = raw.splitlines()
    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        raise SparringError(f"prompt file '{path}' holds no prompts", hint="add at least one non-empty prompt")
    return prompts
