"""Alert-path tracing, for diagnosis: where an alert's time goes across processes.

With ``TELACD_TRACE_ALERTS=FILE`` in its environment, every gateway process
(a single gateway, the owner, each worker) appends one line per step of each
vehicle alarm to FILE: ``STEP PHONE MONOTONIC PID``. ``time.monotonic()`` is
one clock for every process of the machine, so the steps of one alert line up
across the worker that read it and the owner that routed it. Steps, in order:

* ``read``: a read from the vehicle's connection began (every read is marked,
  the alarm's among them);
* ``alarm``: the alarm edge was decoded and its session is being opened
  (a worker hands it to the owner here);
* ``owner``: the owner took the worker's message (multi-process only);
* ``built``: the session (or the update of an open one) is built and its
  commit is being submitted;
* ``committed``: the session is stored, routing starts;
* ``offer``: the offer is being handed to the agent's connection (just before
  the write, which goes out at once: a mark after it can follow the agent's read);
* ``acked``: the 0x8001 acknowledgement was handed to the vehicle's connection.

``python -m bench.micro.alert_path --workers 2`` reads the file back and
prints each step's delay. Off (the default), each site costs one test of a
module constant. The lines are appended with O_APPEND, one write each, so the
processes' lines do not interleave.
"""

from __future__ import annotations

import logging
import os
import time

_PATH = os.environ.get("TELACD_TRACE_ALERTS") or None
ON = _PATH is not None
_fd = -1


def mark(step: str, phone: str) -> None:
    """Append one line; a file that cannot be written turns tracing off (with one warning), never an alert."""
    global _fd, ON
    try:
        if _fd < 0:
            _fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_fd, f"{step} {phone} {time.monotonic():.6f} {os.getpid()}\n".encode())
    except OSError as e:
        ON = False
        logging.getLogger("telacd.alerttrace").warning(
            "TELACD_TRACE_ALERTS=%s: cannot write (%s); alert tracing is off", _PATH, e.strerror or e
        )
