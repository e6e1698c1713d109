"""Sampling maths: model sampling (parameterisations and sigma schedules), schedulers, samplers, noise, guidance and the conditioning batches, step caches."""
