"""Multi-process runs: every process learns at once that another one ended without finishing.

JAX learns it from missed heartbeats (100 s by default) and then aborts the survivors with a page of C++ logs;
a collective already waiting in its rendezvous waits that long too (seen on CPU with gloo and 4 devices per
process: the survivor aborted 57-98 s after its peer was killed). So process 0 keeps one TCP connection to
every other process: the kernel closes a dead process's end at once, a process that finishes says so first,
and a connection closed without that word stops the run on every host, process 0's own end included.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Mapping

_FINISHED = b"finished\n"
_connections: list[socket.socket] = []


def watch(on_lost: Callable[[str], None], *, connect_timeout: float = 300.0) -> None:
    """Connects the processes of a multi-process run (a no-op alone); `on_lost(detail)` is called, on a thread
    of its own, when another process ends without `finish()`."""
    import jax
    import numpy as np
    from jax._src import distributed  # the coordinator's address as jax.distributed.initialize resolved it
    from jax.experimental import multihost_utils

    if jax.process_count() < 2:
        return
    index, server = jax.process_index(), None
    if index == 0:
        try:
            server = socket.create_server(("", 0))  # every interface, a port the system picks
        except OSError as error:  # port 0 tells the others: no watching, JAX's heartbeats alone
            _unwatched(f"process 0 cannot listen for them ({error})")
    port = int(multihost_utils.broadcast_one_to_all(np.int32(server.getsockname()[1] if server else 0)))
    if server is not None:
        threading.Thread(target=_accept, args=(server, jax.process_count() - 1, on_lost), daemon=True).start()
    if index == 0 or port == 0:
        return
    host = distributed.global_state.coordinator_address.rsplit(":", 1)[0]
    try:
        connection = socket.create_connection((host, port), timeout=connect_timeout)
    except OSError as error:  # a firewall between hosts: the run goes on, with JAX's heartbeats alone
        _unwatched(f"this process cannot reach process 0 at {host}:{port} ({error})")
        return
    connection.settimeout(None)
    connection.sendall(f"{index}\n".encode())
    _follow(connection, "process 0", on_lost)


def _unwatched(why: str) -> None:
    logging.getLogger(__name__).warning("the run's processes are not watched: %s; a process that dies is noticed at "
                                        "JAX's heartbeat timeout", why)  # fmt: skip


def watching() -> bool:
    """Whether this process is connected to others of its run."""
    return bool(_connections)


def finish() -> None:
    """Tells the other processes that this one ends because it is done, not because it failed."""
    for connection in _connections:
        try:
            connection.sendall(_FINISHED)
        except OSError:
            pass  # that process has ended already


def _accept(server: socket.socket, expected: int, on_lost: Callable[[str], None]) -> None:
    for _ in range(expected):
        connection, _ = server.accept()
        connection.settimeout(None)
        _follow(connection, None, on_lost)
    server.close()


def _follow(connection: socket.socket, who: str | None, on_lost: Callable[[str], None]) -> None:
    _connections.append(connection)

    def follow() -> None:
        received = b""
        try:
            while chunk := connection.recv(256):
                received += chunk
        except OSError:
            pass
        if _FINISHED not in received:
            index = received.split(b"\n", 1)[0].decode(errors="replace")  # what another process sent first
            on_lost(f"{who or f'process {index}'} ended without finishing: its connection to this process closed")

    threading.Thread(target=follow, daemon=True).start()


def differences(entries: Mapping[str, str]) -> dict[str, list[str | None]]:
    """{key: [its value on process 0, 1, ...]} for the keys of `entries` whose values are not the same on every
    process of a multi-process run (None: absent there); empty alone or when all agree, and the same on every
    process. Processes given different settings hung in the first collective the sizes made unequal, or died in
    gloo's C++ abort ("collective mismatch") with 40 lines of native dump."""
    import hashlib
    import json

    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    if jax.process_count() < 2:
        return {}
    text = json.dumps(dict(entries), sort_keys=True).encode()
    digest = np.frombuffer(hashlib.sha256(text).digest(), np.uint8).astype(np.int32)
    digests = np.asarray(multihost_utils.process_allgather(digest))
    if (digests == digests[0]).all():
        return {}
    length = int(np.max(multihost_utils.process_allgather(np.int32(len(text)))))
    padded = np.zeros(length, np.int32)
    padded[: len(text)] = np.frombuffer(text, np.uint8)
    each = [json.loads(bytes(row.astype(np.uint8)).rstrip(b"\0")) for row in np.asarray(multihost_utils.process_allgather(padded))]
    keys = sorted(set().union(*each))
    return {key: [e.get(key) for e in each] for key in keys if len({e.get(key) for e in each}) > 1}


def by_process(values: list[str | None], absent: str) -> str:
    """`differences`' values as said: "4 on process 0, 2 on process 1" (`absent` where a process had none)."""
    return ", ".join(f"{absent if value is None else value} on process {index}" for index, value in enumerate(values))
