"""RecPress: knowledge distillation for recommender systems."""

from recpress.errors import ConfigError, DataError, RecPressError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "RecPressError", "__version__"]
