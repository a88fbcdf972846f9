"""The Hero API of the FastAPI SQL tutorial, production-shaped."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("heroes")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
