"""qcow2kit: look inside, check and safely edit QEMU qcow2 disk images.

The layout comes from qcow2.ksy, compiled into ``qcow2kit.generated``; this package
adds the image model on top of it.
"""
from .api import FormatRefused, Qcow2Image, open
from .errors import Qcow2Error
from .image import (Bitmap, BitmapTableEntry, Extension, FeatureName, Header, Image,
                    open_image)

__all__ = ["Bitmap", "BitmapTableEntry", "Extension", "FeatureName", "FormatRefused",
           "Header", "Image", "Qcow2Error", "Qcow2Image", "open", "open_image"]
__version__ = "0.1.0"
