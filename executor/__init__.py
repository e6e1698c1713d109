"""The execution engine: workflow formats, validation, planning, caching, the evaluation loop,
events, the memory policy, the job queue and the headless runner. Knows nothing of HTTP."""
