"""The model's input, below everything that runs a model: an image decoded and validated
(`images.load_image`) and turned into the array a set of weights was trained on
(`preprocessing.preprocess`, with the weights' own `Preprocessing`). NumPy and Pillow only."""
