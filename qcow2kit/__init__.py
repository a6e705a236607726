"""qcow2kit: look inside, check and safely edit QEMU qcow2 disk images.

The layout comes from qcow2.ksy, compiled into ``qcow2kit.generated``; this package
adds the image model on top of it.
"""
from typing import TYPE_CHECKING, Any

from .errors import Qcow2Error
from .image import (Bitmap, BitmapTableEntry, Extension, FeatureName, Header, Image,
                    open_image)

if TYPE_CHECKING:
    from .api import FormatRefused, Qcow2Image, open

__all__ = ["Bitmap", "BitmapTableEntry", "Extension", "FeatureName", "FormatRefused",
           "Header", "Image", "Qcow2Error", "Qcow2Image", "open", "open_image"]
__version__ = "0.1.0"

_API = ("FormatRefused", "Qcow2Image", "open")


def __getattr__(name: str) -> Any:
    """The public API (api.py), imported when first asked for: commands that read
    only a header do not load it."""
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
