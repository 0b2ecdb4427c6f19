from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llm_server import Running

MODEL = "test-model"
KEY = "sk-test-key"


@pytest.fixture
def llm_server(tmp_path: Path) -> Iterator[Running]:
    server = Running(models=[MODEL], key=KEY, record=tmp_path / "llm-requests.jsonl")
    yield server
    server.stop()
