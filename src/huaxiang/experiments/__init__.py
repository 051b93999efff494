"""A/B experiments: which variant a user sees (`assign`: a salted hash of the user id, sticky and the same on every
worker) and what the outcome says (`stats`: per-variant metrics with 95% intervals, the lift against the control,
the sample-ratio-mismatch check and the latency guardrail). Pure functions over numpy arrays; the exposures table,
the CLI and the pages build on them."""
