"""Pure-NumPy numerics for driftscope: number formats and exact rounding (``formats``), exact sums
and a correctly rounded FMA (``exact``), bit-exact emulations of the GPU reduction orders of
``docs/reduction-orders.md`` (``orders``; ``rowops`` and ``attention`` for probes.invariant's
batch-invariant kernels), and ways to compare results (``metrics``)."""
from .exact import exact_sum, exact_sum_float64, exact_value, fma, mul_add, round_fraction
from .formats import (FORMATS, Format, cast, from_bits, get_format, quantize_int, round_to_format,
                      to_bits, ulp_distance)
from .metrics import (bitwise_equal, count_differing, distinct_count, max_relative_difference,
                      max_ulp, relative_error)
from .orders import (atomic_tree_sum, block_partials, block_tree_reduce, chunk_for,
                     halving_tree_reduce, lane_block, lane_tree_sum, pairwise_sum, permuted_sum,
                     sequential_sum, split_k_sum, two_pass_tree_sum)

__all__ = [
    "FORMATS", "Format", "cast", "from_bits", "get_format", "quantize_int", "round_to_format",
    "to_bits", "ulp_distance",
    "exact_sum", "exact_sum_float64", "exact_value", "fma", "mul_add", "round_fraction",
    "atomic_tree_sum", "block_partials", "block_tree_reduce", "chunk_for", "halving_tree_reduce",
    "lane_block", "lane_tree_sum", "pairwise_sum", "permuted_sum", "sequential_sum", "split_k_sum", "two_pass_tree_sum",
    "bitwise_equal", "count_differing", "distinct_count", "max_relative_difference", "max_ulp",
    "relative_error",
]
