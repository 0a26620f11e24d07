"""
L{FileStore}: uploads as files in one directory, in tusd's layout: the bytes
in C{<dir>/<id>} and an L{UploadInfo} in C{<dir>/<id>.info} with tusd's
field names, so txtus and tusd can serve each other's directories.

The offset is never written down: it is the size of the data file, as in
tusd.  A crash, a full disk or a cut connection therefore cannot make the
recorded offset disagree with the bytes stored.  Writes are plain blocking
C{os.write} calls of at most one socket read each (bounded local-disk
writes); C{.info} files are replaced atomically (temporary file, then
rename, then the directory is synced, except after the C{Finished} mark,
which a power loss could only make the server set again).

A checksummed chunk is staged in C{<id>.<random>.staged}, which the offset
never counts.  Once its digest matched, a commit marker C{<id>.commit}
(offset, length, staging file) is written atomically, the staged bytes are
copied into place, and the marker is removed.  After a crash, the marker
makes the copy happen again before the upload is next looked at, so an
upload holds all of a verified chunk or none of it.  Staging and temporary
files a crash left behind are removed when the store starts and on every
listing (the expiration cleaner's sweep) once they are C{stale_after}
seconds old.  Files are opened with C{O_NOFOLLOW}: a symlink planted in the
directory is refused, never followed.

A pre-create hook may place an upload's bytes elsewhere in the directory
(C{ChangeFileInfo.Storage.Path}, as tusd's filestore; L{IUploadPlacer}): a
relative path, its missing folders created beneath the directory without
following any symlink.  The C{.info} stays at C{<dir>/<id>.info} and
records the absolute path (C{Storage.Path}, tusd's field), which is how
every later request, process and the cleaner find the bytes.  Unlike
tusd, absolute paths and paths leaving the directory are refused, and
every open, stat and unlink of a placed file walks its folders from the
directory with C{O_NOFOLLOW}: a folder swapped for a symlink is refused.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import stat
import time
from typing import Any, Callable, Iterator

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPullProducer
from twisted.internet.task import cooperate
from twisted.python.failure import Failure
from txtus.logs import Logger
from zope.interface import implementer

from txtus import errors
from txtus.protocol.headers import is_valid_upload_id
from txtus.info import UploadInfo
from txtus.interfaces import (
    IChunkStager,
    IChunkWriter,
    IConcater,
    IDataStore,
    IExpiryRenewer,
    ILengthDeferrer,
    IReader,
    ITerminater,
    IUpload,
    IStagedChunkWriter,
    IUploadLister,
    IUploadPlacer,
)

log = Logger()

FSYNC_POLICIES = ("never", "finish", "chunk")
_INFO_CACHE_SIZE = 4096
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_STAGED = ".staged"
_COMMIT = ".commit"
_TEMPORARY = ".tmp"
# Names the store (and the file locker beside it) make for themselves: a
# placed file must not end like one, or a sweep or a listing would take it
# for one of theirs.
_RESERVED_SUFFIXES = (".info", _STAGED, _COMMIT, _TEMPORARY, ".lock")
_MAX_PLACEMENT = 1024


def _open(path: str, flags: int, mode: int = 0o600) -> int:
    """C{os.open} that refuses to follow a symlink in the store directory."""
    return os.open(path, flags | _NOFOLLOW, mode)


def _beneath(root: str | None, path: str) -> tuple[int, str] | None:
    """
    For C{path} in a folder beneath the store directory (C{root}, its
    prefix ending in a separator): a descriptor of that folder, reached
    one name at a time from C{root} with C{O_NOFOLLOW}, and the file's
    name in it.  L{FileStore.placed_path} checks a placed path once per
    request; a folder swapped for a symlink after that check is refused
    here (C{ELOOP}) rather than followed out of the directory.

    @return: C{None} for a path directly in C{root} (or no C{root}), for
        which a plain C{O_NOFOLLOW} open is already safe.
    """
    if root is None or not path.startswith(root):
        return None
    relative = path[len(root):]
    if "/" not in relative:
        return None
    *folders, name = relative.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for folder in folders:
            try:
                inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | _NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OSError(errno.ELOOP, "a folder on the way is not a folder (a symlink?)", path) from None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd, name


def _open_beneath(root: str | None, path: str, flags: int, mode: int = 0o600) -> int:
    """L{_open} for a data file, which a hook may have placed in folders beneath C{root} (L{_beneath})."""
    walked = _beneath(root, path)
    if walked is None:
        return _open(path, flags, mode)
    fd, name = walked
    try:
        return os.open(name, flags | _NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    finally:
        os.close(fd)


def _unlink_beneath(root: str | None, path: str) -> None:
    walked = _beneath(root, path)
    if walked is None:
        os.unlink(path)
        return
    fd, name = walked
    try:
        os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def _regular_size(path: str, root: str | None = None) -> int:
    """The size of a data file, refusing anything but a regular file."""
    walked = _beneath(root, path)
    if walked is None:
        status = os.lstat(path)
    else:
        fd, name = walked
        try:
            status = os.stat(name, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)
    if not stat.S_ISREG(status.st_mode):
        raise OSError(errno.ELOOP if stat.S_ISLNK(status.st_mode) else errno.EISDIR, "not a regular file", path)
    return status.st_size


# Temporary and staging file names: unique per process by a random tag drawn once, then
# by a counter; a name per write drawn from the kernel's random source cost
# a system call each.  Created with O_EXCL all the same.
_PROCESS_TAG = secrets.token_hex(4)
_temporary_serial = itertools.count()


def _temporary_tag() -> str:
    return f"{_PROCESS_TAG}{next(_temporary_serial):x}"


def _link_or_replace(source: str, target: str) -> None:
    """
    Give C{source} the name C{target} unless it exists: atomically with
    C{link}, or, on a file system without hard links, by a check and a
    rename (racy between processes, but still never over an upload seen).
    """
    try:
        os.link(source, target)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS):
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "exists", target) from None
        os.replace(source, target)


def _storage_error(error: OSError) -> errors.TusError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.StorageFull()
    return errors.InternalServerError(f"storage error: {os.strerror(error.errno or 0)}")


def check_relative_path(path: Any) -> str:
    """
    A placement path: relative, normalised, inside the store directory,
    naming nothing the store or its locker uses.

    @raise txtus.errors.InvalidStorage: why not, for the operator's log.
    """
    if not isinstance(path, str) or not path:
        raise errors.InvalidStorage("Storage.Path must be a non-empty relative path")
    if len(path.encode("utf-8", "surrogatepass")) > _MAX_PLACEMENT:
        raise errors.InvalidStorage(f"Storage.Path is longer than {_MAX_PLACEMENT} bytes")
    if path.startswith("/"):
        raise errors.InvalidStorage("Storage.Path must be relative to the upload directory, not absolute")
    if "\0" in path or any(ord(c) < 0x20 or 0xd800 <= ord(c) < 0xe000 for c in path):
        raise errors.InvalidStorage("Storage.Path must not contain control characters")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise errors.InvalidStorage("Storage.Path must be normalised: no empty, '.' or '..' parts")
        if part.startswith("."):
            raise errors.InvalidStorage("Storage.Path must not name hidden files or folders")
        if len(part.encode("utf-8")) > 255:
            raise errors.InvalidStorage("a name in Storage.Path is longer than 255 bytes")
        if part.endswith(_RESERVED_SUFFIXES):
            raise errors.InvalidStorage(f"a name in Storage.Path ends like the store's own files ({part[-8:]!r})")
    return path


@implementer(IDataStore, IUploadPlacer, ITerminater, IConcater, ILengthDeferrer, IReader, IUploadLister,
             IChunkStager, IExpiryRenewer)
class FileStore:
    """
    @param fsync: when to force bytes to stable storage: C{"finish"}
        (default: when an upload completes, every C{.info} write and every
        staged commit), C{"chunk"} (also after every PATCH) or C{"never"}.
    @param stale_after: seconds after which a staging or temporary file
        nobody touched is a crash's leftover and is removed.  Generous, as
        several processes may share the directory.
    """

    def __init__(self, path: str, fsync: str = "finish", dir_mode: int = 0o775, file_mode: int = 0o664,
                 stale_after: float = 3600.0) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.path = os.path.abspath(path)
        # Upload IDs are checked (no separators) before they reach a path:
        # concatenation is all os.path.join would do, at a fraction of its cost.
        self._prefix = os.path.join(self.path, "")
        self._real_prefix = os.path.join(os.path.realpath(self.path), "")
        self.fsync = fsync
        self.dir_mode = dir_mode
        self.file_mode = file_mode
        self._info_cache: dict[str, tuple[tuple[int, int, int], UploadInfo]] = {}
        os.makedirs(self.path, mode=dir_mode, exist_ok=True)
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "upload directory is not writable", self.path)
        self.stale_after = stale_after
        self.sweep(os.listdir(self.path))

    def use_in(self, composer: Any) -> None:
        composer.use_core(self)
        composer.use_terminater(self)
        composer.use_concater(self)
        composer.use_length_deferrer(self)
        composer.use_reader(self)
        composer.use_lister(self)
        composer.use_stager(self)
        composer.use_expiry_renewer(self)

    # Paths -------------------------------------------------------------

    def data_path(self, upload_id: str) -> str:
        return self._prefix + upload_id

    def info_path(self, upload_id: str) -> str:
        return self._prefix + upload_id + ".info"

    def placed_path(self, info: UploadInfo) -> str:
        """
        Where C{info}'s upload keeps its bytes: C{<dir>/<id>}, or the path
        its C{.info} records (C{Storage.Path}) if a hook placed it.  A
        recorded path is trusted only inside the directory: if the
        directory was moved, the path is taken relative to where the
        C{.info} was (C{Storage.InfoPath}); a path leaving the directory
        (a damaged or foreign C{.info}) is refused.

        @raise txtus.errors.UploadInfoCorrupt: a recorded path this store
            must not use.
        """
        default = self._prefix + info.id
        recorded = info.storage.get("Path") if info.storage else None
        if not recorded or recorded == default:
            return default
        if recorded.startswith(self._prefix):
            relative = recorded[len(self._prefix):]
        else:
            old = os.path.dirname(info.storage.get("InfoPath") or "")
            if not old or not recorded.startswith(os.path.join(old, "")):
                return self._unusable(info, recorded, "outside the upload directory")
            relative = recorded[len(old) + 1:]
            if relative == info.id:
                return default
        try:
            check_relative_path(relative)
        except errors.InvalidStorage as e:
            return self._unusable(info, recorded, e.message)
        path = self._prefix + relative
        # A folder on the way replaced by a symlink since the upload was
        # placed: refuse rather than follow it out of the directory.
        if not os.path.join(os.path.realpath(os.path.dirname(path)), "").startswith(self._real_prefix):
            return self._unusable(info, recorded, "a folder on the way is a symlink leaving the directory")
        return path

    def _unusable(self, info: UploadInfo, recorded: str, reason: str) -> str:
        log.error("upload {upload_id}: its info file places it at {path!r}, which cannot be used: {reason}",
                  upload_id=info.id, path=recorded[:300], reason=reason)
        raise errors.UploadInfoCorrupt()

    def data_file(self, upload_id: str) -> str:
        """The data path of an upload known by its ID only (reads its C{.info} if it may be placed)."""
        return self.placed_path(self.read_info(upload_id))

    def commit_path(self, upload_id: str) -> str:
        return self._prefix + upload_id + _COMMIT

    def write_info(self, info: UploadInfo, exclusive: bool = False, lasting_name: bool = True) -> None:
        """
        Replace C{info}'s C{.info} file atomically, and cache what was
        written under the new file's key, sparing the next read a parse.

        @param exclusive: fail with C{FileExistsError} if there is one.
        @param lasting_name: whether the new file must survive a power
            loss under its name (the directory is synced), rather than
            possibly leave the previous C{.info} in place, which is fine
            for a change that would simply be made again.
        """
        self._info_cache.pop(info.id, None)
        status = self._replace(self.info_path(info.id), info.to_json(), exclusive, lasting_name)
        self._cache_info(info.id, (status.st_ino, status.st_mtime_ns, status.st_size), info.copy())

    def _cache_info(self, upload_id: str, key: tuple[int, int, int], info: UploadInfo) -> None:
        if len(self._info_cache) >= _INFO_CACHE_SIZE:
            del self._info_cache[next(iter(self._info_cache))]
        self._info_cache[upload_id] = (key, info)

    def _replace(self, final: str, content: bytes, exclusive: bool = False,
                 lasting_name: bool = True) -> os.stat_result:
        """
        Replace C{final} with C{content} atomically (a temporary file, then
        a rename); unless C{fsync} is C{"never"}, durably: the file and
        then the directory holding the new name are synced.

        @return: the new file's status (a rename keeps inode and mtime).
        """
        temporary = f"{final}.{_temporary_tag()}{_TEMPORARY}"
        fd = _open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
        try:
            os.write(fd, content)
            if self.fsync != "never":
                os.fsync(fd)
            status = os.fstat(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temporary)
            raise
        os.close(fd)
        if exclusive:
            # link() refuses an existing name, atomically.
            try:
                _link_or_replace(temporary, final)
            finally:
                if os.path.lexists(temporary):
                    os.unlink(temporary)
        else:
            os.replace(temporary, final)
        if lasting_name:
            self._sync_directory()
        return status

    def _sync_directory(self) -> None:
        """Make renames and new names durable (a rename alone is not)."""
        if self.fsync == "never":
            return
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_info(self, upload_id: str) -> UploadInfo:
        """
        The upload's info, from a cache validated by one C{stat}: reading
        and decoding the JSON on every request cost about a tenth of the
        time of a small upload.  The key (inode, mtime, size) changes with
        every atomic replace, including another process's, so the cache is
        safe with several processes on one directory.
        """
        path = self.info_path(upload_id)
        try:
            status = os.stat(path)
            key = (status.st_ino, status.st_mtime_ns, status.st_size)
            cached = self._info_cache.get(upload_id)
            if cached is not None and cached[0] == key:
                return cached[1].copy()
            fd = _open(path, os.O_RDONLY)
            try:
                raw = os.read(fd, 1 << 20)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise errors.UploadNotFound() from None
        except OSError as e:
            raise _storage_error(e) from None
        try:
            info = UploadInfo.from_json(raw)
        except ValueError as e:
            # Only this upload is affected; it answers this until repaired.
            log.warn("upload {upload_id}: corrupt info file {path}: {reason}",
                     upload_id=upload_id, path=path, reason=str(e)[:200])
            raise errors.UploadInfoCorrupt() from None
        info.id = upload_id
        self._cache_info(upload_id, key, info)
        return info.copy()

    # IUploadPlacer -----------------------------------------------------

    def check_placement(self, storage: dict[str, str]) -> dict[str, str]:
        unknown = set(storage) - {"Path", "Type", "InfoPath"}
        if unknown:
            raise errors.InvalidStorage(f"the file store places uploads by Storage.Path only, not {sorted(unknown)!r}")
        if storage.get("Type", "filestore") != "filestore":
            raise errors.InvalidStorage(f"Storage.Type {storage['Type'][:40]!r} is not this store's (filestore)")
        if storage.get("InfoPath"):
            raise errors.InvalidStorage("the .info file's place follows from the upload ID; set ChangeFileInfo.ID")
        if not storage.get("Path"):
            return {}
        return {"Path": check_relative_path(storage["Path"])}

    def _create_placed(self, relative: str) -> str:
        """
        Create the empty data file at C{relative}, making missing folders,
        one name at a time from the directory, never through a symlink.
        Unless C{fsync} is C{"never"}, every folder that received a new
        name is synced: the upload is acknowledged once created, and a
        new folder's entry lost to a power loss would lose the bytes
        beneath it while its C{.info} survives.

        @return: its absolute path.
        @raise txtus.errors.StorageTaken: something already has that name.
        @raise OSError: the file system refused.
        """
        *folders, name = relative.split("/")
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for folder in folders:
                try:
                    os.mkdir(folder, self.dir_mode, dir_fd=fd)
                except FileExistsError:
                    pass
                else:
                    if self.fsync != "never":
                        os.fsync(fd)
                try:
                    inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | _NOFOLLOW, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise errors.StorageTaken("a name on the way in Storage.Path is not a folder") from None
                    raise
                os.close(fd)
                fd = inner
            try:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | _NOFOLLOW,
                                 self.file_mode, dir_fd=fd))
            except FileExistsError:
                raise errors.StorageTaken() from None
            if self.fsync != "never":
                os.fsync(fd)
        finally:
            os.close(fd)
        return self._prefix + relative

    def _remove_placed_folders(self, path: str) -> None:
        """
        Remove the folders a placed upload's file leaves empty, up to the
        directory; reached as L{_beneath} does, so a folder swapped for a
        symlink leaves them all in place.
        """
        if not path.startswith(self._prefix):
            return
        folders = path[len(self._prefix):].split("/")[:-1]
        fds: list[int] = []
        try:
            fds.append(os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for folder in folders:
                fds.append(os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | _NOFOLLOW, dir_fd=fds[-1]))
            for parent, folder in zip(reversed(fds[:-1]), reversed(folders)):
                os.rmdir(folder, dir_fd=parent)
        except OSError:
            return
        finally:
            for fd in fds:
                os.close(fd)

    # IDataStore --------------------------------------------------------

    def new_upload(self, info: UploadInfo) -> Deferred:
        info = info.copy()
        chosen_id = bool(info.id)
        if not chosen_id:
            info.id = secrets.token_hex(16)
        elif not is_valid_upload_id(info.id):
            return fail(errors.InternalServerError("invalid upload ID"))
        info.offset = 0
        placement = info.storage.get("Path") if info.storage else None
        try:
            if placement:
                if os.path.lexists(self.info_path(info.id)):
                    return fail(errors.StorageTaken("an upload with this ID exists"))
                path = self._create_placed(check_relative_path(placement))
            else:
                path = self.data_path(info.id)
                fd = _open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
                os.close(fd)
        except errors.TusError as e:
            return fail(e)
        except FileExistsError:
            # A pre-create hook chose the ID of an existing upload.
            return fail(errors.StorageTaken("an upload with this ID exists"))
        except OSError as e:
            return fail(_storage_error(e))
        info.storage = {"Type": "filestore", "Path": path, "InfoPath": self.info_path(info.id)}
        try:
            # The .info claims an ID a hook chose (two processes, one ID;
            # a placed upload has no <dir>/<id> to claim it).  An ID drawn
            # here cannot be taken: link() and unlink() instead of one
            # rename would be two system calls more per upload.
            self.write_info(info, exclusive=chosen_id)
        except OSError as e:
            # No .info, no upload (a full disk): do not leave its empty data
            # file behind, nameless to every listing.
            try:
                _unlink_beneath(self._prefix, path)
            except OSError:
                pass
            if placement:
                self._remove_placed_folders(path)
            if isinstance(e, FileExistsError):
                return fail(errors.StorageTaken("an upload with this ID exists"))
            return fail(_storage_error(e))
        return succeed(FileUpload(self, info, path))

    def get_upload(self, upload_id: str) -> Deferred:
        if not is_valid_upload_id(upload_id):
            return fail(errors.UploadNotFound())
        try:
            info = self.read_info(upload_id)
            return succeed(FileUpload(self, info, self.placed_path(info)))
        except errors.TusError as e:
            return fail(e)

    # Extensions --------------------------------------------------------

    def terminate(self, upload: "FileUpload") -> Deferred:
        self._info_cache.pop(upload.id, None)
        for path in (self.commit_path(upload.id), upload.path, self.info_path(upload.id)):
            try:
                _unlink_beneath(self._prefix, path)
            except FileNotFoundError:
                pass
            except OSError as e:
                return fail(_storage_error(e))
        if upload.path != self.data_path(upload.id):
            self._remove_placed_folders(upload.path)
        return succeed(None)

    def declare_length(self, upload: "FileUpload", length: int) -> Deferred:
        info = self.read_info(upload.id)
        info.size = length
        upload.info.size = length
        try:
            self.write_info(info)
        except OSError as e:
            return fail(_storage_error(e))
        return succeed(None)

    def renew_expiry(self, upload: "FileUpload", expires: float) -> Deferred:
        try:
            info = self.read_info(upload.id)
            info.expires = expires
            # Pushed back after every PATCH: no directory sync (a journal
            # commit) each time; a power loss could only bring back the
            # previous expiry, as the next PATCH would renew it.
            self.write_info(info, lasting_name=False)
        except errors.TusError as e:
            return fail(e)
        except OSError as e:
            return fail(_storage_error(e))
        upload.info.expires = expires
        return succeed(None)

    def concat_uploads(self, final: "FileUpload", partials: list["FileUpload"]) -> Deferred:
        """
        Append the partials' files to the final upload's file with
        C{copy_file_range} (in-kernel, no copy through Python), a slice at a
        time so a large concatenation does not stall the reactor.
        """
        def copy():
            # Not O_APPEND: copy_file_range refuses appending targets.
            with open(_open_beneath(self._prefix, final.path, os.O_RDWR), "r+b") as target:
                # From the start: an earlier attempt cut short (a crash, a
                # full disk) may have left a prefix behind.
                target.truncate(0)
                position = 0
                for partial in partials:
                    with open(_open_beneath(self._prefix, partial.path, os.O_RDONLY), "rb") as source:
                        size = os.fstat(source.fileno()).st_size
                        yield from _copy(source.fileno(), target.fileno(), 0, position, size)
                        position += size
                if self.fsync != "never":
                    os.fsync(target.fileno())

        def failed(failure: Any) -> Any:
            if failure.check(OSError):
                raise _storage_error(failure.value)
            return failure

        return cooperate(copy()).whenDone().addCallbacks(lambda _: None, failed)

    def send_content(self, upload: "FileUpload", consumer: Any, start: int, length: int) -> Deferred:
        try:
            f = open(_open_beneath(self._prefix, upload.path, os.O_RDONLY), "rb")
        except FileNotFoundError:
            return fail(errors.UploadNotFound())
        except OSError as e:
            return fail(_storage_error(e))
        producer = _FileRangeProducer(f, consumer, start, length)
        consumer.registerProducer(producer, False)
        return producer.done

    def list_upload_ids(self) -> Deferred:
        names = os.listdir(self.path)
        # Housekeeping rides along the cleaner's periodic listing.
        self.sweep(names)
        return succeed(sorted(name[:-5] for name in names
                              if name.endswith(".info") and is_valid_upload_id(name[:-5])))

    # Staged chunks (IChunkStager) and crash leftovers --------------------

    def open_staged_chunk(self, upload: "FileUpload", offset: int) -> Deferred:
        def opened(ignored: None) -> "FileStagedChunkWriter":
            staged = os.path.join(self.path, f"{upload.id}.{_temporary_tag()}{_STAGED}")
            os.close(_open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode))
            return FileStagedChunkWriter(self, upload.id, upload.path, staged, offset)

        return upload.open_chunk(offset).addCallback(opened).addErrback(_as_tus_error)

    def recover(self, upload_id: str, path: str | None = None) -> Deferred:
        """
        Complete a staged commit a crash (or another process) left
        half-done for C{upload_id}, before anything counts its bytes.
        Costs one C{lstat} when there is none.
        """
        if not os.path.lexists(self.commit_path(upload_id)):
            return succeed(None)
        return cooperate(self._apply_commit(upload_id, path)).whenDone().addCallback(lambda _: None)

    def _apply_commit(self, upload_id: str, path: str | None = None) -> Iterator[None]:
        """
        Copy a verified staged chunk into place as its commit marker says.
        Idempotent (the bytes land at a fixed offset), so a second run,
        after a crash or in another process, does no harm.
        """
        marker = self.commit_path(upload_id)
        try:
            fd = _open(marker, os.O_RDONLY)
            try:
                record = os.read(fd, 4096)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return
        offset, length, name = _parse_marker(record)
        target = _open_beneath(self._prefix, path or self.data_file(upload_id), os.O_WRONLY)
        try:
            try:
                source = _open(os.path.join(self.path, name), os.O_RDONLY)
            except FileNotFoundError:
                source = None
            if source is None or os.fstat(source).st_size < length:
                # Staging files go only after the copy is done, so a missing
                # one means the copy completed, unless a crash lost it:
                # then drop the partial copy, never keep a part.
                if os.fstat(target).st_size < offset + length:
                    os.ftruncate(target, offset)
            else:
                try:
                    yield from _copy(source, target, 0, offset, length)
                finally:
                    os.close(source)
            if self.fsync != "never":
                os.fsync(target)
        finally:
            os.close(target)
        try:
            # Only our own marker: a later commit may have written a new one.
            fd = _open(marker, os.O_RDONLY)
            try:
                ours = os.read(fd, 4096) == record
            finally:
                os.close(fd)
            if ours:
                os.unlink(marker)
            os.unlink(os.path.join(self.path, name))
        except FileNotFoundError:
            pass

    def sweep(self, names: list[str]) -> None:
        """
        Remove what crashes left among C{names} (the directory's entries):
        finish interrupted commits, then delete staging and temporary files
        older than C{stale_after}.  Never raises: it is housekeeping.
        """
        now = time.time()
        for name in names:
            try:
                if name.endswith(_COMMIT):
                    for _ in self._apply_commit(name[:-len(_COMMIT)]):
                        pass
                elif name.endswith((_STAGED, _TEMPORARY)):
                    path = os.path.join(self.path, name)
                    if now - os.lstat(path).st_mtime > self.stale_after:
                        if not os.path.lexists(self.commit_path(name.split(".", 1)[0])):
                            os.unlink(path)
            except (FileNotFoundError, errors.UploadNotFound):
                pass
            except (OSError, ValueError, errors.TusError):
                log.failure("could not clean up {name} in the upload directory", name=name)


_COPY_SLICE = 16 * 1024 * 1024


def _copy(source: int, target: int, offset: int, target_offset: int, size: int) -> Iterator[None]:
    """Copy C{size} bytes between descriptors, yielding after each slice."""
    copied = 0
    while copied < size:
        copied += _copy_range(source, target, offset + copied, target_offset + copied, size - copied)
        yield None


def _marker(offset: int, length: int, staged: str) -> bytes:
    return b"%d %d %s" % (offset, length, os.path.basename(staged).encode("ascii"))


def _parse_marker(record: bytes) -> tuple[int, int, str]:
    offset, length, name = record.decode("ascii").split(" ")
    if "/" in name or not name.endswith(_STAGED):
        raise ValueError(f"malformed commit marker naming {name!r}")
    return int(offset), int(length), name


def _as_tus_error(failure: Any) -> Any:
    if failure.check(FileNotFoundError):
        raise errors.UploadNotFound()
    if failure.check(OSError):
        raise _storage_error(failure.value)
    if failure.check(ValueError):
        raise errors.InternalServerError("corrupt commit marker in the upload directory")
    return failure


def _copy_range(source: int, target: int, offset: int, target_offset: int, count: int) -> int:
    count = min(count, _COPY_SLICE)
    try:
        copied = os.copy_file_range(source, target, count, offset, target_offset)
    except (AttributeError, OSError) as e:
        if isinstance(e, OSError) and e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        copied = os.pwrite(target, os.pread(source, min(count, 1 << 20), offset), target_offset)
    if copied == 0:
        raise OSError(errno.EIO, "partial upload shrank while being concatenated")
    return copied


@implementer(IUpload)
class FileUpload:
    """
    @ivar path: where the upload's bytes are (L{FileStore.placed_path}).
    """

    def __init__(self, store: FileStore, info: UploadInfo, path: str) -> None:
        self.store = store
        self.info = info
        self.id = info.id
        self.path = path

    def _after_recovery(self, read: Callable[[int], Any]) -> Deferred:
        """
        C{read(offset)}, once any interrupted commit is done.  Without one
        (nearly always) it runs in this turn, sparing each request a chain
        of callbacks.
        """
        if os.path.lexists(self.store.commit_path(self.id)):
            return self.store.recover(self.id, self.path).addCallback(
                lambda _: read(self._data_size())).addErrback(self._unusable)
        try:
            return succeed(read(self._data_size()))
        except Exception:
            return fail().addErrback(self._unusable)

    def _data_size(self) -> int:
        try:
            return _regular_size(self.path, self.store._prefix)
        except FileNotFoundError:
            raise errors.UploadNotFound() from None

    def _unusable(self, failure: Failure) -> Any:
        if failure.check(OSError) and not failure.check(FileNotFoundError):
            # A directory, a symlink or an unreadable file where the data
            # should be: the operator needs to see which upload.
            log.failure("upload {upload_id}: its data file cannot be used", failure, upload_id=self.id)
        return _as_tus_error(failure)

    def get_info(self) -> Deferred:
        return self._after_recovery(self._info_at)

    def _info_at(self, offset: int) -> UploadInfo:
        return self.info.copy(offset=offset)

    def open_chunk(self, offset: int) -> Deferred:
        def opened(size: int) -> FileChunkWriter:
            if size != offset:
                # Only possible if something wrote behind the lock's back;
                # never append at the wrong place.
                raise errors.MismatchedOffset(headers={"Upload-Offset": str(size)})
            return FileChunkWriter(self.path, offset, self.store.fsync == "chunk", self.store._prefix)

        return self._after_recovery(opened)

    def finish(self) -> Deferred:
        """
        Sync the data (per the fsync policy) and record C{Finished} in the
        C{.info}; both are harmless to repeat.
        """
        try:
            if self.store.fsync != "never":
                fd = _open_beneath(self.store._prefix, self.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            info = self.store.read_info(self.id)
            if not info.finished:
                info.finished = True
                # Should a power loss undo the rename, the upload is found
                # complete but not finished, and finished again: no
                # directory sync (a journal commit on most disks) for it.
                self.store.write_info(info, lasting_name=False)
            self.info.finished = True
        except FileNotFoundError:
            return fail(errors.UploadNotFound())
        except OSError as e:
            return fail(_storage_error(e))
        except errors.TusError as e:
            return fail(e)
        return succeed(None)


@implementer(IChunkWriter)
class FileChunkWriter:
    """
    Writes a chunk with blocking C{pwrite}s of one socket read each; never
    buffers, so it never needs to pause its producer, except to stop it
    when the disk refuses bytes.

    The data file is opened for each socket read rather than held open for
    the whole request: an upload trickling in then costs one descriptor
    (its socket), not two, which is what lets one process hold ten thousand
    slow uploads; an C{open}/C{close} pair is small next to a 256 KiB write.
    """

    def __init__(self, path: str, start: int, fsync: bool, root: str | None = None) -> None:
        """
        @param root: the store directory's prefix, if C{path} may be a
            placed file in folders beneath it (opened by L{_open_beneath}).
        """
        self._path = path
        self._root = root
        self._start = start
        self._position = start
        self._fsync = fsync
        self._error: OSError | None = None
        self._producer: Any = None
        self._closed = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if self._error is not None or self._closed:
            return
        view = memoryview(data)
        try:
            fd = _open_beneath(self._root, self._path, os.O_WRONLY)
            try:
                while view:
                    written = os.pwrite(fd, view, self._position)
                    self._position += written
                    view = view[written:]
            finally:
                os.close(fd)
        except OSError as e:
            self._error = e
            if self._producer is not None:
                self._producer.stopProducing()

    def _close(self) -> Deferred | None:
        """Mark the writer ended; a failure if it already was."""
        if self._closed:
            return fail(RuntimeError("chunk already committed, rolled back or aborted"))
        self._closed = True
        return None

    def _sync(self) -> None:
        """C{fsync} what this writer wrote, if its policy says so."""
        try:
            if self._fsync and self._error is None and self._position > self._start:
                fd = _open_beneath(self._root, self._path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            self._error = e

    def commit(self) -> Deferred:
        closed = self._close()
        if closed is not None:
            return closed
        self._sync()
        try:
            offset = _regular_size(self._path, self._root)
        except FileNotFoundError:
            return fail(errors.UploadNotFound())
        except OSError as e:
            return fail(_storage_error(e))
        if self._error is not None:
            return fail(_storage_error(self._error))
        return succeed(offset)

    def abort(self) -> Deferred:
        # What was written stays (a plain chunk keeps its bytes), and no
        # descriptor is held between writes: nothing to release.
        self._closed = True
        return succeed(None)


@implementer(IStagedChunkWriter)
class FileStagedChunkWriter(FileChunkWriter):
    """
    Writes a checksummed chunk into its own staging file; C{commit} copies
    it into the data file behind a commit marker (see the module
    docstring), C{rollback} and C{abort} delete it.
    """

    def __init__(self, store: FileStore, upload_id: str, data: str, staged: str, start: int) -> None:
        super().__init__(staged, 0, store.fsync != "never")
        self._store = store
        self._id = upload_id
        self._data = data
        self._offset = start

    def commit(self) -> Deferred:
        closed = self._close()
        if closed is not None:
            return closed
        self._sync()
        store, length = self._store, self._position
        if self._error is not None:
            self._discard()
            return fail(_storage_error(self._error))
        try:
            if _regular_size(self._data, store._prefix) != self._offset:
                self._discard()
                return fail(errors.InternalServerError("upload changed behind its lock during a staged chunk"))
            if length:
                store._replace(store.commit_path(self._id), _marker(self._offset, length, self._path))
        except FileNotFoundError:
            self._discard()
            return fail(errors.UploadNotFound())
        except OSError as e:
            self._discard()
            return fail(_storage_error(e))
        if not length:
            self._discard()
        return store.recover(self._id, self._data).addCallback(
            lambda _: _regular_size(self._data, store._prefix)).addErrback(_as_tus_error)

    def rollback(self) -> Deferred:
        closed = self._close()
        if closed is not None:
            return closed
        self._discard()
        return succeed(self._offset)

    def abort(self) -> Deferred:
        if not self._closed:
            self._closed = True
            self._discard()
        return succeed(None)

    def _discard(self) -> None:
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass
        except OSError:
            # The sweep removes it once stale; never raise from here.
            log.failure("could not remove staged chunk {path}", path=self._path)


@implementer(IPullProducer)
class _FileRangeProducer:
    """Reads a byte range 64 KiB at a time, as the consumer asks for it."""

    CHUNK = 64 * 1024

    def __init__(self, f: Any, consumer: Any, start: int, length: int) -> None:
        self._file = f
        self._consumer = consumer
        self._position = start
        self._remaining = length
        self.done: Deferred = Deferred()

    def resumeProducing(self) -> None:
        if self._file is None:
            return
        try:
            data = os.pread(self._file.fileno(), min(self.CHUNK, self._remaining), self._position) if self._remaining else b""
        except OSError as e:
            self._end(_storage_error(e))
            return
        if not data:
            self._end(None if self._remaining == 0 else errors.InternalServerError("upload shrank during download"))
            return
        self._position += len(data)
        self._remaining -= len(data)
        self._consumer.write(data)

    def stopProducing(self) -> None:
        # The consumer went away (the client disconnected): not an error of
        # ours, so it is reported as the lost connection it is.
        self._end(ConnectionLost("download stopped by the consumer"))

    def _end(self, error: Exception | None) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        self._consumer.unregisterProducer()
        if error is None:
            self.done.callback(None)
        else:
            self.done.errback(error)
