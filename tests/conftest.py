"""Shared test helpers: one torch thread per test module, and the CLI run in-process."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from lmlab.cli import main


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is much faster than several on a shared, busy CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """``cli("train", recipe, ...)`` -> (exit code, stdout, stderr) of ``lmlab ...`` run in-process."""

    def run(*argv) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
        out, err = capsys.readouterr()
        return rc, out, err

    return run
