"""Entry point of one training run: `python -m specstream.train [OPTIONS]`, in one process or many.

Several processes on one machine:

    torchrun --standalone --nproc-per-node 4 -m specstream.train --data shards ...
    python -m specstream.train --nproc 4 --data shards ...   (reruns itself under torchrun)

Use torchrun's `--nproc-per-node` spelling: with torch 2.13 on Python 3.11, `torchrun --nproc 4` fails
with "ambiguous option". Ranks use gloo on the CPU and NCCL on GPUs. Exit status: 0 on success, 2 for an
invalid option or data, 130 after Ctrl-C (KeyboardInterrupt), 1 for other errors.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from specstream.training import TrainConfig, build_parser, config_from_args, train
from specstream.training.loop import TrainingInterrupted, interruption_message
from specstream.world import World

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the status shells give a command stopped by Ctrl-C

__all__ = ["TrainConfig", "main", "torchrun_command", "train"]


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """Return the command that runs `python -m specstream.train ARGS` in `nproc` processes via torchrun."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "specstream.train", *args]


def _without_nproc(argv: list[str]) -> list[str]:
    """Return argv without its --nproc option, so the ranks that torchrun starts do not start more."""
    kept, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg == "--nproc":
            skip_next = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def _configure_logging(world: World) -> None:
    logging.basicConfig(
        level=logging.INFO if world.is_main else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank {world.rank}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None, prog: str = "python -m specstream.train") -> int:
    """Parse the options, start torchrun when --nproc > 1, else train; return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)  # exits with status 2 on an unknown option
    if args.nproc < 1:
        print(f"error: --nproc must be >= 1, got {args.nproc}", file=sys.stderr)
        return 2
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _run_torchrun(torchrun_command(args.nproc, _without_nproc(argv)))

    world = config = None
    try:
        world = World.from_env()
        _configure_logging(world)
        config = config_from_args(args)
        train(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        # Under torchrun every rank gets the interrupt, and rank 0 alone prints the message.
        if world is None or world.is_main:
            if isinstance(interrupt, TrainingInterrupted):
                message = str(interrupt)
            elif config is not None:
                message = interruption_message(config)
            else:
                message = "interrupted before the run started"
            print(message, file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _run_torchrun(command: list[str]) -> int:
    """Run torchrun and return its exit status, or EXIT_INTERRUPTED after Ctrl-C.

    After Ctrl-C, wait for torchrun instead of killing it as subprocess.call does. torchrun gets the same
    SIGINT from the terminal and forwards it to the ranks, which run in sessions of their own, so killing it
    could leave them running. A second Ctrl-C kills torchrun.
    """
    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt:
        pass
    try:
        process.wait()
    except KeyboardInterrupt:
        process.kill()
        process.wait()
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
