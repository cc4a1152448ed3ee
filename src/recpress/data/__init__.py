"""Data: readers, named datasets, cleaning, split protocols and negative sampling."""

from recpress.data.cleaning import binarize, build_interactions, dedupe, kcore_mask, reindex
from recpress.data.readers import (
    read_lightgcn,
    read_movielens,
    read_pairs_tsv,
    read_recbole_inter,
    read_table,
    read_users_dat,
)
from recpress.data.registry import (
    DATASETS,
    DatasetSpec,
    RemoteFile,
    cache_dir,
    dataset_stats,
    download_file,
    find_dataset,
    list_datasets,
    load_dataset,
    load_split,
    rebuild_td_interactions,
)
from recpress.data.sampling import csr_keys, epoch_triples, sample_excluding, sample_negatives
from recpress.data.splits import PROTOCOLS, split, split_from_parts
from recpress.data.types import Interactions, Split, to_csr

__all__ = [
    "DATASETS",
    "PROTOCOLS",
    "DatasetSpec",
    "Interactions",
    "RemoteFile",
    "Split",
    "binarize",
    "build_interactions",
    "cache_dir",
    "csr_keys",
    "dataset_stats",
    "dedupe",
    "download_file",
    "epoch_triples",
    "find_dataset",
    "kcore_mask",
    "list_datasets",
    "load_dataset",
    "load_split",
    "read_lightgcn",
    "read_movielens",
    "read_pairs_tsv",
    "read_recbole_inter",
    "read_table",
    "read_users_dat",
    "rebuild_td_interactions",
    "reindex",
    "sample_excluding",
    "sample_negatives",
    "split",
    "split_from_parts",
    "to_csr",
]
