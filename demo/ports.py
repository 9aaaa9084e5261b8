"""Can the app listen where it was told to? Checked before anything heavy starts, so a taken port
is said in one line and the process exits non-zero, instead of a traceback after the banner."""

from __future__ import annotations

import errno
import socket
import sys

from xception_core.settings import Settings


def port_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (in words), or None if it can."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # uvicorn sets SO_REUSEADDR too: a port in TIME_WAIT is usable, one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (is another copy of the app running?)"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def exit_if_port_taken(settings: Settings) -> None:
    """Says why and exits with status 2 when the configured host and port cannot be listened on."""
    problem = port_problem(settings.host, settings.port)
    if problem:
        print(f"Xception Explorer cannot start: {problem}. Set GRADIO_SERVER_PORT to a free port.",
              file=sys.stderr, flush=True)
        raise SystemExit(2)
