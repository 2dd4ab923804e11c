"""Data layer: real-format sources, preprocessing, vocabulary, demo corpus."""
