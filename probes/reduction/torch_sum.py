"""What users already run: torch.sum, and the atomic scatter of index_add_ / scatter_add_ (every element
added into one cell, the pattern of an embedding-bag or MoE combine backward)."""
import torch


def torch_sum(x, out, acc_dtype):
    """torch.sum with an explicit accumulation dtype (torch picks the order and the kernel)."""
    torch.sum(x, dim=0, dtype=acc_dtype, out=out[0])
    return out


def index_add_sum(x_acc, index, out):
    """Sum through Tensor.index_add_ with every index 0: on a GPU, one atomicAdd per element."""
    out.zero_()
    out.index_add_(0, index, x_acc)
    return out


def scatter_add_sum(x_acc, index, out):
    """Sum through Tensor.scatter_add_ with every index 0: on a GPU, one atomicAdd per element."""
    out.zero_()
    out.scatter_add_(0, index, x_acc)
    return out
