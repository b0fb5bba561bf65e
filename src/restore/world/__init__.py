"""The built-in synthetic world: a procedural image-caption generator, a tiny CLIP pretrained on it (shipped
in ``weights/``), and downstream classification tasks. Everything here is synthetic and labelled as such."""
