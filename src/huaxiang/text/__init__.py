"""Pretrained language models: the encoder, embeddings of items, reviews, queries and users."""
