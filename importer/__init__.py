"""dmimport: bulk-import customer and event files into the Dmartech customer-data platform."""

from .errcodes import Category, ErrCode

__all__ = ["Category", "ErrCode"]
__version__ = "0.1.0"
