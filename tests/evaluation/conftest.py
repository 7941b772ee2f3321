"""Fixtures of the evaluation tests: blocked sockets, the installed real evaluation sets."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a host fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def real_sets():
    """The real evaluation sets (``make test`` installs them with ``londi-jax eval --fetch``)."""
    from londi_jax.evaluation import data

    if not data.installed():
        pytest.skip(f"the evaluation sets are not installed ({data.FETCH_HINT}; `make test` does)")
    return data.data_dir()
