"""Datasets, few-shot splits, protocols, transforms and loaders: what a run trains and tests on.

splits = load_dataset("dtd", root)                      # CoOp layout under root (CoOp's $DATA)
train = few_shot(splits, shots=16, seed=1)               # the CoOp family's exact few-shot sets
base, novel = base_to_novel(train)
loader = make_loader(base.train, train_transform(), 4, shuffle=True, workers=2, seed=1)
"""

import importlib

from restore.data.fewshot import default_cache_dir, few_shot
from restore.data.load import load_dataset, read_dataset
from restore.data.protocols import (
    BaseToNovel,
    CrossDataset,
    DomainGeneralisation,
    FewShot,
    Protocol,
    ProtocolData,
    base_to_novel,
    get_protocol,
)
from restore.data.registry import DatasetSpec, Resource, get_dataset, list_datasets, register_dataset
from restore.data.types import DatasetSplits, Datum
from restore.data.verify import VerifyReport, verify_dataset

# torch and torchvision load only when a loader or transform is asked for, so `restore data list/verify` and
# code that only reads splits start fast.
_LAZY = {
    "ImageDataset": "restore.data.batches",
    "make_loader": "restore.data.batches",
    "CLIP_MEAN": "restore.data.transforms",
    "CLIP_STD": "restore.data.transforms",
    "eval_transform": "restore.data.transforms",
    "train_transform": "restore.data.transforms",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'restore.data' has no attribute {name!r}")


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "BaseToNovel",
    "CrossDataset",
    "DatasetSpec",
    "DatasetSplits",
    "Datum",
    "DomainGeneralisation",
    "FewShot",
    "ImageDataset",
    "Protocol",
    "ProtocolData",
    "Resource",
    "VerifyReport",
    "base_to_novel",
    "default_cache_dir",
    "eval_transform",
    "few_shot",
    "get_dataset",
    "get_protocol",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "read_dataset",
    "register_dataset",
    "train_transform",
    "verify_dataset",
]
