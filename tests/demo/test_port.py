"""A taken port is said so before the banner, and the app exits non-zero (issue 9, item 11)."""

from __future__ import annotations

import socket

import pytest

from demo import server
from demo.ports import port_problem


def test_a_taken_port_stops_the_app_before_the_banner(monkeypatch, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("GRADIO_SERVER_NAME", "127.0.0.1")
        monkeypatch.setenv("GRADIO_SERVER_PORT", str(port))
        monkeypatch.setattr(server, "create_app", lambda *a, **k: pytest.fail("the app was built on a taken port"))
        with pytest.raises(SystemExit) as exited:
            server.main()
    out, err = capsys.readouterr()
    assert exited.value.code not in (0, None)
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "Xception Explorer on http" not in out + err


def test_a_free_port_has_no_problem_and_a_bad_host_is_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert port_problem("127.0.0.1", port) is None
    assert "cannot" in port_problem("no-such-host.invalid", port)
