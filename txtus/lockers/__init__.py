"""
Lockers: one exclusive lock per upload, with tusd v2's lock-release requests.

One module per locker: L{memory} for one process, L{file} for several
processes sharing one directory.
"""
