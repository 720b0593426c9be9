"""The HTTP face of the shop: app factory, routes, validation and JSON errors."""

from trioshop.http.app import create_app

__all__ = ["create_app"]
