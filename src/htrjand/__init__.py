"""htrjand: handwritten text recognition of line images with HTR-JAND."""
__version__ = "0.1.0"

from .recognition import Recognizer, Result, load  # noqa: E402

__all__ = ["Recognizer", "Result", "load", "__version__"]
