"""
The public surface is what C{txtus} exports; this pins it, so a change to it
is a deliberate one (and every export really is importable and documented).
"""

import txtus

PUBLIC = {
    "CorsConfig", "DemoPage", "FileLocker", "FileStore", "HookFunctions", "HookRequest", "HookResponse",
    "MemoryLocker", "MemoryStore", "RedisLocker", "S3Client", "S3Store", "StoreComposer",
    "TusConfig", "TusError", "TusRequest", "TusResource", "TusSite", "UploadInfo",
    "make_service", "make_site", "mount",
}


def test_public_surface_is_pinned():
    assert set(txtus.__all__) == PUBLIC


def test_every_export_exists_and_says_why():
    for name in txtus.__all__:
        value = getattr(txtus, name)
        assert value.__doc__, f"txtus.{name} has no docstring"


def test_every_shipped_store_and_locker_can_use_in_a_composer(tmp_path):
    composer = txtus.StoreComposer()
    from txtus.stores.s3.sigv4 import Credentials
    s3 = txtus.S3Store(txtus.S3Client("bucket", Credentials("key", "secret"), endpoint="http://127.0.0.1:9"))
    for component in (txtus.FileStore(str(tmp_path)), txtus.MemoryStore(), s3,
                      txtus.MemoryLocker(), txtus.FileLocker(str(tmp_path)), txtus.RedisLocker()):
        component.use_in(composer)
    assert composer.core is not None and composer.locker is not None


def test_importing_txtus_installs_no_reactor():
    # An embedder (or a hook plugin under twist --reactor asyncio) must be
    # able to import txtus before it installs the reactor it wants.
    import subprocess
    import sys
    code = ("import sys, txtus, txtus.interfaces; "
            "assert 'twisted.internet.reactor' not in sys.modules, 'a reactor was installed'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
