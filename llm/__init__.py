"""driftscope.llm: attribute a language model's logit drift to operations in layers (see issue 7), serve it
(llm.serve) and make it deterministic (llm.deterministic())."""


def deterministic():
    """The deterministic mode as a context manager: `with llm.deterministic() as mode: ...` switches batch-invariant
    kernels on under every PyTorch model, in every thread, until the block ends (llm.determinism has the details);
    `mode.summary()["deterministic"]` says whether everything that ran was covered."""
    from llm.determinism import deterministic as _deterministic
    return _deterministic()
