"""trioshop: a shopping-cart server built on Trio structured concurrency."""

__version__ = "0.1.0"
