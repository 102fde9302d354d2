"""Stopping on SIGINT / SIGTERM: :class:`StopRequest` turns a signal into a stop at the next
step boundary, agreed by every process of a multi-host run."""
from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax

from adacode_jax.training import workdir as workdir_lib


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM (Slurm, Kubernetes, Cloud TPU preemption) ask the run to
    stop at the next step boundary, where it saves a checkpoint and exports; a later launch
    resumes exactly. Further signals while it stops only print a note (the save is not cut).

    With several processes, they agree every ``poll_every`` steps (a barrier of the JAX
    coordination service): all stop at the same step if any was signalled.
    """

    def __init__(self, poll_every: int = 10):
        self.poll_every = int(poll_every)
        self.signum: int | None = None
        self.count = 0
        self._previous: dict[int, Any] = {}
        self._round = workdir_lib.coordination_round()

    def _handle(self, signum, frame) -> None:
        del frame
        self.count += 1
        if self.signum is None:
            self.signum = signum
            msg = (f"\n{signal.Signals(signum).name}: stopping at the next step boundary "
                   "(saving a checkpoint first)\n")
        else:
            msg = (f"\n{signal.Signals(signum).name}: already stopping; the checkpoint is being "
                   f"saved (kill -9 {os.getpid()} aborts, losing the steps since the last one)\n")
        os.write(2, msg.encode())

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a stop request"

    def agreed(self, step: int) -> bool:
        """Whether to stop after ``step``: this process's signal (one process), or any
        process's at the agreed steps (several)."""
        if jax.process_count() == 1:
            return self.signum is not None
        if step % self.poll_every:
            return False
        from orbax.checkpoint import multihost

        client = multihost.get_jax_distributed_client()
        prefix = f"adacode:stop:{self._round}:{step}/"
        if self.signum is not None:
            client.key_value_set(f"{prefix}{jax.process_index()}", str(self.signum))
        client.wait_at_barrier(f"adacode_stop_{self._round}_{step}", 10 * 60 * 1000)
        votes = client.key_value_dir_get(prefix)
        if votes and self.signum is None:
            self.signum = int(votes[0][1])
        return bool(votes)
