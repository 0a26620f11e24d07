"""
Hooks: the upload lifecycle events of tusd v2 (and C{pre-request}) sent to
a hook handler, in process or over tusd's transports.

One module per job: L{events} (the wire format), L{dispatch} (when events
are sent and what their answers do), L{inprocess} (calling an in-process
handler), L{http}, L{directory} and L{plugin} (the transports of
C{twist tus}).
"""
