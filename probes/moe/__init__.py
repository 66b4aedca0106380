"""MoE routing probe: does a request's expert choice depend on its neighbours, and what does that do to its answer?

A mixture-of-experts layer (Mixtral: 8 experts, top-2) sends each token to the experts its router scores
highest. Two things can make a request's routing depend on the other requests of its batch:

- routing: with an expert capacity (GShard / Switch: ceil(FACTOR * tokens * top_k / n_experts) slots per
  expert, computed per batch), tokens of one batch compete for slots, so a request's token can overflow
  because of the tokens ahead of it and be dropped to the residual or re-routed to another expert;
- arithmetic: with the model's own dropless top-k no token competes, but the router's logits are computed
  by kernels whose rounding can depend on the batch (a batch-dependent GEMM, here and in every layer before
  it), and a token whose k-th and (k+1)-th router logits nearly tie flips its expert set on one rounding.

`python -m probes.moe` batches one probe request with 0..63 seeded others (llm.serve's traffic corpus) and
measures, per batch size and per layer, the fraction of the probe's tokens whose expert set changes, and
what that does to its output (final-logit rms / max difference, top-1 flips, first greedy divergence):
routing alone (a capacity rule vs top-k, in the same batch), arithmetic alone (top-k in the batch vs top-k
alone), and both; separately, at batch 1, a bfloat16 vs a float32 router and the near-tie margins of the
router logits. The two effects side by side, per batch size, in the table and the plot.

Layout: the routing rule (`routing.py`, also what llm's `router=` run option runs), the probe request among
its neighbours (`batch.py`), the cases and their report (`probe.py`), the table and the plot (`table.py`),
the command line (`__main__.py`). The models (tiny-mixtral on a CPU, mixtral-8x7b-random[:LAYERS] on a GPU)
come from llm.models: this probe reads llm, which no other probe does (llm is imported when a case runs).
"""
