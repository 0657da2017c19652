"""The run directory: config, append-only logs, atomic checkpoints, and trackers.

    RUN/config.yaml         resolved config, as run
    RUN/metrics.jsonl       one line per step
    RUN/attacks.jsonl       every attack with its response and scores (append-only)
    RUN/eval.json           held-out evaluations (start, after warm-up, end)
    RUN/checkpoints/step-N  both players' weights, optimiser states and game state (safetensors + JSON)
    RUN/checkpoints/latest  the name of the newest complete checkpoint

A checkpoint is written into a temporary folder and renamed into place, and ``latest`` is replaced
atomically, so a crash at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sparring.errors import SparringError


def _fsync_write(path: Path, data: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write(path: Path, data: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    _fsync_write(Path(tmp), data)
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a run's JSONL log ([] if it does not exist yet), up to a line cut by a crash mid-write:
    everything after such a line is from the same crash."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


class JsonlLog:
    """An append-only JSON-lines file, flushed per line, that can be cut back to a step on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[dict]:
        return read_jsonl(self.path)

    def truncate_to(self, step: int) -> list[dict]:
        """Keep rows of steps before ``step`` (and rows without a step); rewrite atomically."""
        kept = [r for r in self.read() if r.get("step", -1) < step]
        atomic_write(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
        return kept


def check_writable(directory: Path) -> None:
    """Fail before training, not at step 900, if the run directory cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as exc:
        raise SparringError(
            f"run directory '{directory}' is not writable: {exc.strerror}",
            hint="choose another run.dir, or free space / fix permissions",
        ) from exc
    free = shutil.disk_usage(directory).free
    if free < 200 * 2**20:
        raise SparringError(
            f"run directory '{directory}' has only {free // 2**20} MiB free",
            hint="checkpoints need a few hundred MiB; free space or choose another run.dir",
        )


# ------------------------------------------------------------------------------------------------
# Optimiser and module state as safetensors + JSON (nothing pickled)


def optimizer_to_files(optimizer: torch.optim.Optimizer, folder: Path, name: str) -> None:
    optimizer_state_to_files(optimizer.state_dict(), folder, name)


def optimizer_state_to_files(state: dict, folder: Path, name: str) -> None:
    """An optimiser state dict as safetensors (its tensors) and JSON (the rest); parameters are keyed by
    index (``optimizer.state_dict()``) or by name (a sharded player's gathered state)."""
    tensors, scalars = {}, {}
    for key, entry in state["state"].items():
        for field, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{key}.{field}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{key}.{field}"] = value
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def optimizer_state_from_files(folder: Path, name: str) -> dict:
    """What ``optimizer_state_to_files`` wrote, as a state dict (index keys back to ints)."""
    meta = json.loads((folder / f"{name}.json").read_text())
    path = folder / f"{name}.safetensors"
    tensors = load_file(str(path)) if path.exists() else {}
    state: dict[int | str, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        param, _, field = key.rpartition(".")
        state.setdefault(int(param) if param.isdigit() else param, {})[field] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def optimizer_from_files(optimizer: torch.optim.Optimizer, folder: Path, name: str) -> None:
    optimizer.load_state_dict(optimizer_state_from_files(folder, name))


class Checkpoints:
    def __init__(self, folder: Path, keep: int) -> None:
        self.folder = folder
        self.keep = keep
        folder.mkdir(parents=True, exist_ok=True)

    def latest(self) -> Path | None:
        pointer = self.folder / "latest"
        if not pointer.exists():
            return None
        path = self.folder / pointer.read_text().strip()
        if not (path / "complete.json").exists():
            raise SparringError(
                f"checkpoint {path} named by {pointer} is incomplete",
                hint="delete the 'latest' file to resume from an older checkpoint",
            )
        return path

    def write(self, step: int, writer) -> Path:
        """Call ``writer(tmp_folder)`` then move the folder into place and point ``latest`` at it."""
        final = self.folder / f"step-{step}"
        tmp = Path(tempfile.mkdtemp(prefix=f".step-{step}-", dir=self.folder))
        try:
            writer(tmp)
            _fsync_write(tmp / "complete.json", json.dumps({"step": step}))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        atomic_write(self.folder / "latest", final.name)
        self._prune()
        return final

    def _prune(self) -> None:
        done = sorted(
            (p for p in self.folder.glob("step-*") if (p / "complete.json").exists()),
            key=lambda p: int(p.name.split("-")[1]),
        )
        for old in done[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.folder.glob(".step-*"):  # left by a process killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.folder.glob(".latest-*"):
            stale.unlink(missing_ok=True)


class Tracker:
    """Optional TensorBoard / W&B logging of the numeric metrics."""

    def __init__(self, kind: str, run_dir: Path, config: dict) -> None:
        self.kind, self.backend = kind, None
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise SparringError(
                    "run.tracker=tensorboard needs the tensorboard package", hint="pip install tensorboard"
                ) from exc
            self.backend = SummaryWriter(str(run_dir / "tensorboard"))
        elif kind == "wandb":
            try:
                import wandb
            except ImportError as exc:
                raise SparringError("run.tracker=wandb needs the wandb package", hint="pip install wandb") from exc
            self.backend = wandb.init(project="sparring", name=run_dir.name, config=config, dir=str(run_dir))

    def log(self, step: int, metrics: dict) -> None:
        numeric = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if self.kind == "tensorboard":
            for key, value in numeric.items():
                self.backend.add_scalar(key, value, step)
        elif self.kind == "wandb":
            self.backend.log(numeric, step=step)

    def close(self) -> None:
        if self.backend is not None:
            (self.backend.close if self.kind == "tensorboard" else self.backend.finish)()
