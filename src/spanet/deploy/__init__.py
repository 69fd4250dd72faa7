"""Using a trained model outside spanet: a faiss gallery index and the ONNX export."""
