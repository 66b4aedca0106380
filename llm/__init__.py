"""driftscope.llm: attribute a language model's logit drift to operations in layers (see issue 7)."""
