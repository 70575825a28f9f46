"""Read the Dockerfile and .dockerignore, and replay a build outside Docker.

No Docker engine runs where the tests run, so the image's steps are replayed
on this machine: the build context is assembled as Docker would (honouring
.dockerignore), the build stage's COPY and RUN steps run with the image's
absolute paths moved into a temporary folder, and the final stage's ENV and
CMD describe how to start the installed server.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .support import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise AssertionError(f"no stage named {name!r}")


def _logical_lines(text: str) -> list[str]:
    """Instructions with continuation lines joined; comment lines dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def _substitute(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("${" + key + "}", value).replace("$" + key, value)
    return text


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            parts = args.split()
            base = _substitute(parts[0], global_args)
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(Instruction(keyword, args))
    return Dockerfile(global_args, stages)


def parse_env(args: str, base: dict[str, str]) -> dict[str, str]:
    """The variables one ``ENV a=1 b="2"`` sets, with ``$NAME`` taken from ``base``."""
    values: dict[str, str] = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        assert sep, f"ENV in the legacy 'ENV key value' form: {args}"
        values[key] = _substitute(value, {**base, **values})
    return values


def exec_form(args: str) -> list[str]:
    """The argument list of an exec-form (JSON array) CMD."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck_command(args: str) -> list[str]:
    """The CMD of a ``HEALTHCHECK [--options] CMD [...]`` instruction."""
    head, sep, command = args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args}"
    assert all(opt.startswith("--") for opt in head.split()), head
    return exec_form(command.strip())


# -- .dockerignore and the build context ---------------------------------------


def ignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    patterns = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns


def _matches(pattern: str, rel: str) -> bool:
    """Docker's rule: a pattern matches a path or any folder above it."""
    pattern = os.path.normpath(pattern).lstrip("/")
    parts = rel.split("/")
    for end in range(1, len(parts) + 1):
        prefix = "/".join(parts[:end])
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase("/".join(parts[s:end]), pattern[3:]) for s in range(end)):
                return True
        elif fnmatch.fnmatchcase(prefix, pattern) and prefix.count("/") == pattern.count("/"):
            return True
    return False


def ignored(rel: str, patterns: list[str]) -> bool:
    """Whether ``rel`` (a path relative to the context) is left out; the last match wins."""
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _matches(pattern[1:] if negated else pattern, rel):
            result = not negated
    return result


def build_context(dest: Path, root: Path = ROOT) -> list[str]:
    """Copy into ``dest`` the files Docker would send as the build context."""
    patterns = ignore_patterns()
    sent = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if ignored(rel, patterns):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(dirpath) / name, target)
            sent.append(rel)
    return sorted(sent)


# -- replaying the build ---------------------------------------------------------


@dataclass
class Replay:
    """A build replayed under ``root``: image paths map to folders under it."""

    root: Path
    mapping: dict[str, Path] = field(default_factory=dict)

    def path(self, image_path: str) -> Path:
        for prefix in sorted(self.mapping, key=len, reverse=True):
            if image_path == prefix or image_path.startswith(prefix.rstrip("/") + "/"):
                rest = image_path[len(prefix) :].lstrip("/")
                return self.mapping[prefix] / rest if rest else self.mapping[prefix]
        raise AssertionError(f"{image_path} is outside the folders the replay maps")

    def translate_value(self, value: str) -> str:
        """An ENV value (``PATH`` included) with mapped image paths moved."""
        parts = value.split(":")
        return ":".join(
            str(self.path(p)) if p.startswith("/") and self.maps(p) else p for p in parts
        )

    def maps(self, image_path: str) -> bool:
        return any(
            image_path == prefix or image_path.startswith(prefix.rstrip("/") + "/")
            for prefix in self.mapping
        )

    def translate(self, word: str) -> str:
        if word == "python":
            return sys.executable
        if word.startswith("/"):
            return str(self.path(word))
        return word


def _copy(context: Path, sources: list[str], dest: Path) -> None:
    many = len(sources) > 1
    copied = 0
    for pattern in sources:
        for match in sorted(glob.glob(str(context / pattern))):
            src = Path(match)
            copied += 1
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True)
            else:
                target = dest / src.name if (many or dest.is_dir()) else dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
    assert copied, f"COPY {sources}: nothing in the build context matches"


def _run_commands(args: str) -> list[list[str]]:
    words = shlex.split(args)
    commands: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def run_build_stage(stage: Stage, context: Path, replay: Replay, timeout: float) -> None:
    """Run ``stage``'s WORKDIR, COPY, ENV and RUN steps under the replay's folders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    workdir: Path | None = None
    for instruction in stage.instructions:
        kind, args = instruction.keyword, instruction.args
        if kind == "WORKDIR":
            workdir = replay.path(args)
            workdir.mkdir(parents=True, exist_ok=True)
        elif kind == "ENV":
            env.update(parse_env(args, env))
        elif kind == "COPY":
            words = args.split()
            assert not words[0].startswith("--"), f"COPY {args} in the build stage"
            assert workdir is not None, "COPY before WORKDIR"
            dest = words[-1]
            target = workdir / dest if not dest.startswith("/") else replay.path(dest)
            if dest.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
            _copy(context, words[:-1], target)
        elif kind == "RUN":
            for command in _run_commands(args):
                argv = [replay.translate(word) for word in command]
                done = subprocess.run(
                    argv, cwd=workdir, env=env, timeout=timeout, capture_output=True, text=True
                )
                assert done.returncode == 0, f"RUN {command} failed:\n{done.stderr[-3000:]}"

        else:
            raise AssertionError(f"the replay does not know {kind} in the build stage")
