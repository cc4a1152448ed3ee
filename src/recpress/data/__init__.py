"""Data: readers, named datasets, cleaning, split protocols and negative sampling."""

from recpress.data.types import Interactions, Split, to_csr

__all__ = ["Interactions", "Split", "to_csr"]
