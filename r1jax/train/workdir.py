"""One run per work directory, and a resume that cannot silently change what is being trained.

`WorkdirLock`: process 0 of a run holds an exclusive `flock` on `<workdir>/.lock` for the run's
life and writes its holder (host, pid, start time) into it. A second run into the same workdir is
refused with a message naming that holder; a lock whose holder died is free again (the kernel
drops a dead process's flock), so it is taken over without anyone deleting a file. (flock is
per host: on a filesystem shared by several hosts, point each run at its own workdir.)

`check_resume`: before a run resumes from a checkpoint it compares its config with the saved
`config.json`. Fields that decide what is trained (the model's shape, the data) may not change;
the message names each differing field and the fix. Anything else that differs (more steps, a
new learning rate, another mesh) is reported and allowed. Nothing is written before the check.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket


class WorkdirLock:
    def __init__(self, workdir: str, *, enabled: bool = True):
        self.path = os.path.join(workdir, ".lock")
        self.enabled = enabled
        self._file = None

    def __enter__(self):
        if not self.enabled:
            return self
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise RuntimeError(f"{os.path.dirname(self.path)} is in use by {holder}; wait for that "
                               "run to end (or stop it), or give this run another workdir") from None
        self._file.seek(0)
        self._file.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        self._file.write(f"host {socket.gethostname()} pid {os.getpid()} since {started}\n")
        self._file.flush()
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def check_resume(workdir: str, record: dict, pinned: tuple[str, ...]) -> list[str]:
    """Compare `record` (the new config) with workdir/config.json. Raises ValueError when a field
    under one of the `pinned` prefixes differs; returns the other differing fields as notes. A
    field the saved config does not have (added to r1jax since) or no longer used is a note: the
    checkpoints cannot have been made with another value of it."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            saved = _flatten(json.load(f))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} (the config the checkpoints were made with) cannot be read: {e}; "
                         "restore it, or give this run another workdir") from None
    new = _flatten(json.loads(json.dumps(record, default=str)))
    differing = sorted(k for k in saved.keys() | new.keys() if saved.get(k) != new.get(k))
    blocked = [k for k in differing if k in saved and k in new
               and any(k == p or k.startswith(p + ".") for p in pinned)]
    if blocked:
        changes = "; ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in blocked)
        raise ValueError(f"{workdir} holds checkpoints of another model or data ({changes}); resume "
                         f"with the config in {path}, or give this run another workdir to start "
                         "fresh")
    return [f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in differing]
