"""huaxiang (画像): deep user profiles for e-commerce search and recommendation."""

__version__ = "0.1.0"
