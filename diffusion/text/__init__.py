"""Text conditioning: the CLIP and T5 text towers, their tokenizers, prompt weighting and chunking, embeddings."""
