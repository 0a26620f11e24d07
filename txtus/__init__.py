"""
txtus: a tus 1.0 resumable-upload server for Twisted.

The public surface is what this module exports; everything else is
internal and may change.
"""

from txtus.composer import StoreComposer
from txtus.config import CorsConfig, TusConfig
from txtus.errors import TusError
from txtus.hooks.events import HookRequest, HookResponse
from txtus.hooks.inprocess import HookFunctions
from txtus.lockers.file import FileLocker
from txtus.stores.file import FileStore
from txtus.info import UploadInfo
from txtus.lockers.memory import MemoryLocker
from txtus.stores.memory import MemoryStore
from txtus.stores.s3.client import S3Client
from txtus.stores.s3.store import S3Store
from txtus.web.demo import DemoPage
from txtus.web.resource import TusResource
from txtus.service import make_service, make_site, mount
from txtus.web.streaming import TusRequest, TusSite

__all__ = [
    "CorsConfig",
    "DemoPage",
    "FileLocker",
    "FileStore",
    "HookFunctions",
    "HookRequest",
    "HookResponse",
    "MemoryLocker",
    "MemoryStore",
    "RedisLocker",
    "S3Client",
    "S3Store",
    "StoreComposer",
    "TusConfig",
    "TusError",
    "TusRequest",
    "TusResource",
    "TusSite",
    "UploadInfo",
    "make_service",
    "make_site",
    "mount",
]


def __getattr__(name: str) -> object:
    # txredisapi imports twisted.internet.reactor, which installs the
    # default reactor: importing txtus must leave the choice of reactor to
    # the application (twist --reactor, asyncioreactor.install()).
    if name == "RedisLocker":
        from txtus.lockers.redis import RedisLocker
        return RedisLocker
    raise AttributeError(f"module 'txtus' has no attribute {name!r}")
