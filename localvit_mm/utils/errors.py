"""The error the tools report as one line: a problem and its fix."""
import os
import re
import sys
import time

# Exit status of a tool stopped by bad input (argparse uses it too).
USER_ERROR_EXIT = 2
# How long a rank other than 0 waits before it reports its own error: long
# enough for rank 0 to report the same one and the launcher to end the job.
OTHER_RANK_GRACE_S = 20


class UserInputError(Exception):
    """Bad input from the command line, a config, a checkpoint or the data
    (not a bug).

    The tools (:func:`run_main`) print its message as a single
    ``error: ...`` line and exit with status 2.
    """


def one_line(error: BaseException) -> str:
    """The message of ``error`` as one line.

    An error raised in a DataLoader worker comes back with the worker's
    traceback as its message; its last line holds the original message.
    """
    text = str(error).strip()
    if 'Original Traceback' in text:
        text = re.sub(r'^[\w.]+: ', '', text.splitlines()[-1])
    return ' '.join(text.split())


def launch_rank() -> int:
    """This process's rank in a multi-process launch by torchrun or SLURM;
    0 when there is a single process."""
    for rank, size in (('RANK', 'WORLD_SIZE'), ('SLURM_PROCID',
                                                'SLURM_NTASKS')):
        if int(os.environ.get(size, 1)) > 1:
            return int(os.environ.get(rank, 0))
    return 0


def run_main(main, *args, **kwargs):
    """Run a tool's ``main``; a :class:`UserInputError` becomes one
    ``error: ...`` line on stderr and exit status 2, without a traceback.

    In a multi-process launch rank 0 reports; every other rank first waits
    ``OTHER_RANK_GRACE_S`` seconds, in which the launcher ends the job when
    rank 0 fails the same way, and only then reports (with its rank) what
    went wrong on it alone.
    """
    try:
        return main(*args, **kwargs)
    except UserInputError as error:
        rank = launch_rank()
        prefix = 'error: '
        if rank != 0:
            time.sleep(OTHER_RANK_GRACE_S)
            prefix = f'error (rank {rank}): '
        sys.stdout.flush()
        print(prefix + one_line(error), file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT)
