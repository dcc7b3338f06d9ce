"""Fine-tuning runs launched from the Finetune tab: background processes, read through their files.

A run is `python -m finetune.cli --output-dir <data>/finetune/<name> [flags]` in its own process
(its GPU memory is its own, and a page reload does not touch it). The trainer writes, in its run
folder, config.json, metrics.jsonl (one JSON line per logged step), status.json (state, step,
total_steps) and, when done, lora.safetensors; this module only reads them. Stop terminates the
process group; resume relaunches the same command with `--resume latest` (from the last
checkpoint). A finished run's LoRA is registered by copying it into <data>/loras/<name>.safetensors,
where the storyboard's LoRA picker looks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMAND_FILE = "ui_command.json"  # the argv a run was launched with, for resume


@dataclass(frozen=True)
class RunInfo:
    name: str
    folder: str
    state: str  # starting | running | done | failed | stopped | <trainer state>
    step: int
    total_steps: int
    pid: int | None
    lora: str | None  # registered LoRA file, once done
    message: str = ""

    def to_dict(self) -> dict:
        return dict(name=self.name, folder=self.folder, state=self.state, step=self.step,
                    total_steps=self.total_steps, pid=self.pid, lora=self.lora, message=self.message)


def run_name_ok(name: str) -> str:
    name = (name or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise UserError("run name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def flags_from(options: dict) -> list[str]:
    """{"lora.rank": 16, "recycling.strategy": "l2", "train.error_recycling": False} -> CLI flags.

    Keys are `section.knob` of finetune.config.TrainConfig; None values are left out (defaults)."""
    from finetune.config import flag_name

    out: list[str] = []
    for key, value in options.items():
        if value is None or value == "":
            continue
        section, _, knob = key.partition(".")
        flag = flag_name(section, knob)
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        else:
            out += [flag, str(value)]
    return out


class FinetuneRuns:
    def __init__(self, runs_dir: str | os.PathLike, lora_dir: str | os.PathLike):
        self.runs_dir = Path(runs_dir)
        self.lora_dir = Path(lora_dir)
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ launching
    def launch(self, name: str, options: dict, *, config_file: str | None = None) -> RunInfo:
        name = run_name_ok(name)
        folder = self.runs_dir / name
        if folder.exists() and any(folder.iterdir()):
            raise UserError(f"a run named {name!r} exists; resume it or pick another name")
        argv = [sys.executable, "-m", "finetune.cli"]
        if config_file:
            argv += ["--config", str(config_file)]
        argv += flags_from({**options, "train.output_dir": str(folder), "train.progress": False})
        self._check_config(argv)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / COMMAND_FILE).write_text(json.dumps(argv), encoding="utf-8")
        self._start(name, argv)
        return self.info(name)

    def resume(self, name: str) -> RunInfo:
        name = run_name_ok(name)
        cmd = self.runs_dir / name / COMMAND_FILE
        if not cmd.is_file():
            raise UserError(f"no run named {name!r} to resume")
        if self._alive(name):
            raise UserError(f"run {name!r} is still running")
        argv = [a for a in json.loads(cmd.read_text(encoding="utf-8"))]
        if "--resume" not in argv:
            argv += ["--resume", "latest"]
        self._start(name, argv)
        return self.info(name)

    def stop(self, name: str) -> RunInfo:
        """Terminate the run's process group; steps since the last checkpoint are lost."""
        with self._lock:
            proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            raise UserError(f"run {name!r} is not running")
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        (self.runs_dir / name / "stopped").write_text(str(time.time()), encoding="utf-8")
        return self.info(name)

    def shutdown(self) -> None:
        """Runs outlive the app on purpose (they are processes of their own); nothing to stop here."""

    def _check_config(self, argv: list[str]) -> None:
        """Resolve the config in a quick child (`--print-config`): bad settings fail here, with the message."""
        res = subprocess.run(argv + ["--print-config"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                             env=self._env())
        if res.returncode != 0:
            lines = [ln for ln in (res.stderr or res.stdout).strip().splitlines() if ln.strip()]
            raise UserError("the fine-tuning settings were refused: " + (lines[-1] if lines else "unknown error"))

    def _start(self, name: str, argv: list[str]) -> None:
        folder = self.runs_dir / name
        (folder / "stopped").unlink(missing_ok=True)
        log = open(folder / "log.txt", "ab")
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                start_new_session=True)  # its own process group: stop reaches its children
        log.close()
        with self._lock:
            self._procs[name] = proc

    @staticmethod
    def _env() -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        return env

    def _alive(self, name: str) -> bool:
        with self._lock:
            proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    # ------------------------------------------------------------------ reading
    def names(self) -> list[str]:
        if not self.runs_dir.is_dir():
            return []
        runs = [p for p in self.runs_dir.iterdir() if (p / COMMAND_FILE).is_file()]
        return [p.name for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]

    def info(self, name: str) -> RunInfo:
        name = run_name_ok(name)
        folder = self.runs_dir / name
        if not (folder / COMMAND_FILE).is_file():
            raise UserError(f"no run named {name!r}")
        status = _read_json(folder / "status.json") or {}
        with self._lock:
            proc = self._procs.get(name)
        code = proc.poll() if proc is not None else None
        state = str(status.get("state") or "starting")
        message = ""
        if proc is not None and code is None:
            state = state if state not in ("done", "failed") else "running"
        elif (folder / "stopped").exists() and state != "done":
            state = "stopped"
        elif code not in (None, 0) and state != "done":
            state, message = "failed", _last_error(folder / "log.txt")
        elif proc is None and state in ("starting", "running"):
            state = "stopped"  # launched by an earlier server; the process is gone
        lora = self.register(name) if state == "done" else None
        return RunInfo(name=name, folder=str(folder), state=state, step=int(status.get("step") or 0),
                       total_steps=int(status.get("total_steps") or 0), pid=proc.pid if proc else None,
                       lora=lora, message=message)

    def metrics(self, name: str) -> list[dict]:
        """Rows of metrics.jsonl (a half-written last line is skipped)."""
        path = self.runs_dir / run_name_ok(name) / "metrics.jsonl"
        rows = []
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
        except OSError:
            pass
        return rows

    def register(self, name: str) -> str | None:
        """Copy a finished run's lora.safetensors into the LoRA folder (once); returns the registered path."""
        src = self.runs_dir / name / "lora.safetensors"
        if not src.is_file():
            return None
        dst = self.lora_dir / f"{name}.safetensors"
        if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
            tmp = dst.with_name(dst.name + ".part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        return str(dst)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _last_error(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:") or "Error" in ln]
    return (errors or lines or [""])[-1][:500]
