"""Model files and formats: reading checkpoints (safetensors, pickles, GGUF, diffusers folders), splitting and assembling components, latent formats, merging and saving."""
