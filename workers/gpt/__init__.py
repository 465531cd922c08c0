"""The GPT trainer: model shapes, the model, its data, the training loop."""
