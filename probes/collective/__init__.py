"""Do collectives add the ranks' numbers in an order that changes the bits?

An all-reduce gives every rank the element-wise sum of W ranks' arrays. Which ranks' values are added
first is the library's choice: NCCL's ring cuts the buffer into chunks and each chunk's sum starts at a
different rank (so neighbouring elements are summed in different orders), its tree adds subtrees first,
its protocols (LL, LL128, Simple) and channel counts change the chunking; gloo has its own ring and
halving-doubling algorithms. With W = 2 every order gives the same bits (one addition, and IEEE addition
is commutative); with W >= 3 the order can change the last bits of a sum, and so can a change of
algorithm, protocol, message size or machine, though one configuration repeats itself run to run.

`python -m probes.collective`, launched with torchrun (every rank runs it; rank 0 writes the report),
measures all-reduce, reduce-scatter and all-gather of fixed seeded inputs: distinct results over repeated
runs, whether the ranks agree, the ulp spread, the error against the exact sum (numerics.collective), the
orders that match (rank order, the textbook ring), and a fixed-order reduction of our own (all-gather,
then a sum in rank order: the same bits on every rank, run, algorithm and machine) with its cost against
the all-reduce. On a CPU the ranks talk through gloo, on GPUs through NCCL, whose algorithm and protocol
are chosen by NCCL_ALGO / NCCL_PROTO when the communicator is made: one torchrun per variant
(scripts/gpu/collective.sh). docs/collective.md has the details.
"""
