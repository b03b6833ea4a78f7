"""htrjand: handwritten text recognition of line images with HTR-JAND."""
__version__ = "0.1.0"

from .decoding import Decoder  # noqa: E402
from .runtime import LineReader, OnnxRecognizer, Result, load  # noqa: E402

__all__ = ["Decoder", "LineReader", "OnnxRecognizer", "Recognizer", "Result", "load", "__version__"]


def __getattr__(name: str):
    """`htrjand.Recognizer` imports PyTorch only when asked for (the ONNX runtime does not need it)."""
    if name == "Recognizer":
        from .recognition import Recognizer

        return Recognizer
    raise AttributeError(f"module 'htrjand' has no attribute {name!r}")
