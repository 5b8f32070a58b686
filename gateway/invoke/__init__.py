"""One module per model type: a Dify request in, adapter calls, a Dify reply out."""
