"""qcow2kit: look inside, check and safely edit QEMU qcow2 disk images.

The layout comes from qcow2.ksy, compiled into ``qcow2kit.generated``; this package
adds the image model on top of it.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .api import FormatRefused, Qcow2Image, open
    from .errors import Qcow2Error
    from .image import Bitmap, Extension, FeatureName, Header, Image, open_image
    from .records import BitmapTableEntry

__all__ = ["Bitmap", "BitmapTableEntry", "Extension", "FeatureName", "FormatRefused",
           "Header", "Image", "Qcow2Error", "Qcow2Image", "open", "open_image"]
__version__ = "0.1.0"

# the module that defines each public name, imported when the name is first asked
# for: a command (or the generated parser, imported alone) loads only what it uses
_HOMES = {"Qcow2Error": "errors", "BitmapTableEntry": "records", "FormatRefused": "api",
          "Qcow2Image": "api", "open": "api",
          **dict.fromkeys(["Bitmap", "Extension", "FeatureName", "Header", "Image",
                           "open_image"], "image")}


def __getattr__(name: str) -> Any:
    """A public name, from its module (_HOMES)."""
    if name in _HOMES:
        from importlib import import_module
        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
