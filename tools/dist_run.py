"""torchrun for tools/dist_train.sh and tools/dist_test.sh.

``python tools/dist_run.py`` takes torchrun's arguments and runs the same
launcher, with one difference: when the first process to fail exited with
status 2, the tools' status for bad input (``USER_ERROR_EXIT`` of
``localvit_mm.utils.errors``), rank 0 has already printed the one-line
``error: ...``, so the job ends with status 2 and nothing else: no
"failed (exitcode: 2)" log line and no ChildFailedError traceback and report
burying that line. A process killed by a signal (out of memory, a dead
node) is named in one ``error: ...`` line with the way to go on. Any other
failure is reported as torchrun reports it.
Several processes per node get ``OMP_NUM_THREADS=1`` unless it is set, as
torchrun does, without torchrun's banner about it.
"""
import logging
import os
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import determine_local_world_size, parse_args, run

USER_ERROR_EXIT = 2


class QuietOnUserError(logging.Filter):
    """Drop the agent's log lines that only repeat what the failure report
    (or, for bad input, rank 0's error line) says: the closing signals sent
    to the other processes and the "failed (exitcode: 2)" line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith('Sending process %s closing signal'):
            return False
        return not (message.startswith('failed (exitcode: %s)')
                    and record.args[0] == USER_ERROR_EXIT)


def main(argv=None):
    logging.getLogger(
        'torch.distributed.elastic.multiprocessing.api').addFilter(
            QuietOnUserError())
    args = parse_args(argv)
    if determine_local_world_size(args.nproc_per_node) > 1:
        os.environ.setdefault('OMP_NUM_THREADS', '1')
    try:
        run(args)
    except ChildFailedError as error:
        rank, first = error.get_first_failure()
        if first.exitcode == USER_ERROR_EXIT:
            sys.exit(USER_ERROR_EXIT)
        if first.exitcode < 0:  # killed by a signal: there is no traceback
            print(
                f'error: rank {rank} (pid {first.pid}) died from '
                f'{first.signal_name()}, so the job was stopped: rerun with '
                '--resume to go on from the last checkpoint, or set '
                'MAX_RESTARTS=N to restart by itself',
                file=sys.stderr)
            sys.exit(1)
        raise


if __name__ == '__main__':
    main()
