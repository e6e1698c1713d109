"""Stable Diffusion networks and maths: checkpoint files, UNet, VAE, text encoders, sampling."""
