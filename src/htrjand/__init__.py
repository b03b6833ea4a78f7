"""htrjand: handwritten text recognition of line images with HTR-JAND."""
__version__ = "0.1.0"

from .decoding import Decoder  # noqa: E402
from .recognition import Recognizer, Result, load  # noqa: E402

__all__ = ["Decoder", "Recognizer", "Result", "load", "__version__"]
