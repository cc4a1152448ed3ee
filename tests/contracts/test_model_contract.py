"""Every registered model passes the `RecommenderContract`."""

from __future__ import annotations

import pytest

from recpress.models import MODELS
from tests.contracts.models import RecommenderContract


class TestRegisteredModels(RecommenderContract):
    @pytest.fixture(params=sorted(MODELS))
    def model_name(self, request):
        return request.param
