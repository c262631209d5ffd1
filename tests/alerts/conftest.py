from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.alerts.fake_slack import FakeSlack


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    yield fake
    fake.close()
