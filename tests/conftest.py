"""Shared test fixtures. Real data lives in ../shared/data (never copied into the repository);
the tests fail, not skip, when it is missing."""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WILDREID_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def earlier_test_sessions_removed(tmp_path_factory, pytestconfig) -> None:
    """A session writes gigabytes of random model weights in the exact layouts (test_backbones).
    pyproject.toml has pytest delete each passing test's folder and keep one session, but pytest
    deletes older sessions only when a session ends: a machine that kept earlier ones (a CI
    runner kept three) ran out of disk first. Delete them before the first test; a session that
    is still running holds its ``.lock`` and is left alone."""
    if pytestconfig.getoption("basetemp"):
        return  # a folder the user chose, whose neighbours are theirs
    current = tmp_path_factory.getbasetemp()
    for folder in current.parent.iterdir():
        ended = not (folder / ".lock").exists()
        if re.fullmatch(r"pytest-\d+", folder.name) and folder != current and ended:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(
            f"real test data not found at {SHARED_DATA}: the tests need ../shared/data "
            "(or WILDREID_SHARED_DATA pointing at it)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def lite0_backbone():
    """The offline EfficientNet-Lite0 descriptor, loaded once for the whole session."""
    from wildreid.describe.backbones import load_backbone

    return load_backbone("efficientnet-lite0")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network fails at once, so a download could not pass unnoticed."""

    connect = socket.socket.connect

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test")

    def local_only(sock, address):  # data-loader workers talk over Unix sockets
        if sock.family != socket.AF_UNIX:
            refuse()
        return connect(sock, address)

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", local_only)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures(...)``): the
    test machine is shared, and two spinning OpenMP threads on two busy cores run ten times slower
    than one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def lions(shared_data):
    """16 LionData identities: the database photos and queries of its first 12 known identities,
    and of 4 new individuals among the queries."""
    from wildreid.data.dataset import load_dataset

    table = load_dataset(shared_data / "LionData").table
    known = table[table["split"] == "database"]["identity"].drop_duplicates().head(12).tolist()
    new = sorted(
        set(table[table["split"] == "query"]["identity"]) - set(table[table["split"] == "database"]["identity"])
    )
    return table[table["identity"].isin(known + new[:4])].reset_index(drop=True)


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"
