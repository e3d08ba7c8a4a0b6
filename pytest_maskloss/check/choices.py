"""The values the check's options take (paths, granularities, padding sources), in pure Python
so that the plugin validates them without importing the check."""

ALL_PATHS = ("evaluate", "test_on_batch", "train_on_batch", "fit")
GRANULARITIES = ("batch", "token")
PAD_IN = ("auto", "labels", "inputs", "sample_weight")
