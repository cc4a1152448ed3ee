"""Every registered distiller passes the `DistillerContract`."""

from __future__ import annotations

import pytest

from recpress.distill.registry import DISTILLERS
from tests.contracts.distillers import DistillerContract


class TestRegisteredDistillers(DistillerContract):
    @pytest.fixture(params=sorted(DISTILLERS))
    def method(self, request):
        return request.param
