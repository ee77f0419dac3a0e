"""toolkit: a plugin-based training toolkit for small language and vision models."""

from toolkit.errors import ToolkitError
from toolkit.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["ToolkitError", "hookimpl", "__version__"]
