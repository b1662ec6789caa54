"""How much memory autograd keeps for the backward pass."""
from typing import Optional

import torch
import torch.nn as nn


class SavedTensorBytes(torch.autograd.graph.saved_tensors_hooks):
    """Count the bytes of the tensors autograd saves inside the block.

    Each storage counts once (views of one tensor share it) and the
    parameters of ``exclude`` are left out, so the count is the activation
    memory a training forward leaves for its backward pass::

        with SavedTensorBytes(exclude=model) as saved:
            loss = model(x).sum()
        saved.nbytes
    """

    def __init__(self, exclude: Optional[nn.Module] = None):
        self._params = set() if exclude is None else {
            p.untyped_storage().data_ptr()
            for p in exclude.parameters()
        }
        self._storages = {}
        super().__init__(self._pack, lambda tensor: tensor)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._params:
            self._storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def __enter__(self) -> 'SavedTensorBytes':
        super().__enter__()
        return self

    @property
    def nbytes(self) -> int:
        return sum(self._storages.values())
