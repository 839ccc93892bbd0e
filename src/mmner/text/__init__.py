"""Text encoders: Hugging Face transformers from a local directory or a packaged model; word vectors."""
