"""Every output option of every subcommand, found by walking the argparse tree, is aimed at things it must never
write over: a checkpoint (by suffix, and by content under another name), a path below a file, a folder that cannot
be written. A command added later is walked as well, so it cannot forget the guard (`spanet.outputs`)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest
import torch

from spanet.cli import build_parser, main

# dests of options that name something a command writes; a new command's `--out-*` is found by its prefix, other
# outputs (a gallery folder) are marked with `spanet.cli.common.writes`
_OUTPUT_DESTS = {"out", "output", "out_dir", "json", "visualize"}


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _subcommands(sub, (*prefix, name))
                found.extend(nested or [((*prefix, name), sub)])
    return found


def _takes_path(action: argparse.Action) -> bool:
    return action.nargs != 0 and action.type not in (int, float) and not action.choices


def _is_output(action: argparse.Action) -> bool:
    named = action.dest in _OUTPUT_DESTS or action.dest.startswith("out")
    return _takes_path(action) and (named or getattr(action, "writes", False))


def _value(action: argparse.Action, *, checkpoint: Path, other: Path) -> str:
    if action.choices:
        return str(next(iter(action.choices)))
    if action.type is int:
        return "1"
    if action.type is float:
        return "0.5"
    if action.type is not None and getattr(action.type, "__name__", "") == "_size":
        return "64x32"
    return str(checkpoint if action.dest == "checkpoint" else other)


def _argv(command: tuple[str, ...], parser: argparse.ArgumentParser, output: argparse.Action, target: Path,
          *, checkpoint: Path, other: Path) -> list[str]:  # fmt: skip
    """The command with every required argument filled in (any value argparse accepts) and `output` set to `target`."""
    options: list[str] = []
    positionals: list[str] = []
    required = [a for a in parser._actions if a.required or not a.option_strings]
    for group in parser._mutually_exclusive_groups:
        if group.required and not any(a in required for a in group._group_actions):
            required.append(group._group_actions[0])
    for action in required:
        if isinstance(action, argparse._SubParsersAction) or action is output:
            continue
        value = _value(action, checkpoint=checkpoint, other=other)
        (options.extend([action.option_strings[0], value]) if action.option_strings else positionals.append(value))
    if output.option_strings:
        options.extend([output.option_strings[0], str(target)])
    else:  # a positional output: keep the positionals' order
        positionals = [str(target) if a is output else _value(a, checkpoint=checkpoint, other=other)
                       for a in parser._actions if not a.option_strings]  # fmt: skip
    return [*command, *options, *positionals]


def _cases() -> list[tuple[tuple[str, ...], argparse.ArgumentParser, argparse.Action]]:
    return [(cmd, sub, a) for cmd, sub in _subcommands(build_parser()) for a in sub._actions if _is_output(a)]


def test_the_walk_finds_the_output_options_of_the_commands() -> None:
    found = {(" ".join(cmd), a.option_strings[0] if a.option_strings else a.dest) for cmd, _, a in _cases()}
    for expected in [("calibrate", "--out"), ("report", "--out"), ("evaluate", "--json"), ("search", "--json"),
                     ("index build", "--out"), ("extract", "--out"), ("train", "--output"), ("synth", "out_dir")]:  # fmt: skip
        assert expected in found
    assert len(found) >= 18


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("target_kind", ["checkpoint", "renamed checkpoint", "below a file", "unwritable"])
def test_no_output_option_writes_over_a_checkpoint_or_crashes_on_a_bad_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target_kind: str
) -> None:
    checkpoint = tmp_path / "run" / "last.pt"
    checkpoint.parent.mkdir()
    torch.save({"weights": torch.arange(4.0)}, checkpoint)  # a torch zip archive, like every checkpoint
    renamed = tmp_path / "weights_copy"
    renamed.write_bytes(checkpoint.read_bytes())
    other = tmp_path / "input.txt"
    other.write_text("an input\n")
    target = {"checkpoint": checkpoint, "renamed checkpoint": renamed, "below a file": other / "sub" / "out.json",
              "unwritable": Path("/proc/spanet-out/out.json")}[target_kind]  # fmt: skip
    before = {path: _sha(path) for path in (checkpoint, renamed, other)}
    failures = []
    for command, parser, output in _cases():
        argv = _argv(command, parser, output, target, checkpoint=checkpoint, other=other)
        status = main(argv)
        err = capsys.readouterr().err
        if status != 2 or "Traceback" in err or str(target) not in err or ("checkpoint" in target_kind and "is a checkpoint" not in err):
            failures.append(f"spanet {' '.join(argv)} -> exit {status}: {err.strip()[-300:]}")
        assert {path: _sha(path) for path in before} == before, f"spanet {' '.join(argv)} changed an input"
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "run" / "last.pt.replaced").exists()


def test_the_cli_embedding_choices_are_the_models_kinds() -> None:
    """The CLI spells the kinds torch-free (building the parser loads no torch); they must stay the model's."""
    from spanet.cli.common import EMBEDDING_CHOICES
    from spanet.model import EMBEDDING_KINDS

    assert EMBEDDING_CHOICES == EMBEDDING_KINDS
    kinds = [a.choices for _, sub in _subcommands(build_parser()) for a in sub._actions
             if a.dest == "kind" and "parts" in (a.choices or ())]  # fmt: skip
    assert len(kinds) >= 5 and all(tuple(c) == EMBEDDING_KINDS for c in kinds)
