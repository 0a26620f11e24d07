"""
Log observers for C{twist tus --log-format text|json}.

txtus writes one line per upload created, finished, terminated or expired
and per refused request, each with the upload's ID in C{upload_id}, so
these lines are on the path of every small upload.  Twisted's own file
observers cost more than the rest of a small request's logging: the
classic text one re-parses each format string with C{string.Formatter} and
formats the time with C{strftime} per event, and C{twist}'s default when
the log is not a terminal, the JSON one, flattens and serialises the whole
event (the logger, the source object) into record-separated JSON that log
shippers do not read line by line.

L{text_observer} (the default) writes Twisted's classic line (time,
C{[namespace#level]}, message) with C{str.format_map} and a time string
cached per second.  L{json_observer} writes one JSON object per line:
C{time}, C{level}, C{namespace}, C{msg} and every plain field of the
event (C{upload_id}, C{size}, C{status}, C{code}...).  Events that need
more than C{str.format_map} (Twisted's C{{callable()}} syntax, legacy
events) fall back to Twisted's formatter.

The way there costs too: an event passes Twisted's level validation in
C{Logger.emit}, the global publisher and C{twist}'s level filter before
reaching an observer, several times the cost of the observer itself.
txtus's modules therefore log through L{Logger}, whose events go to
L{EVENTS}: by default the global publisher (so an embedding application
sees them like any others), and under C{twist tus} straight to the log
observer, filtered by C{twist --log-level} (L{EventRoute.direct}).
"""

from __future__ import annotations

import json
import time
from typing import IO, Any, Callable

from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.logger import Logger as _TwistedLogger

Observer = Callable[[dict], None]


class _Clock:
    """ISO 8601 local time strings, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        return self._text


def _message(event: dict) -> str:
    text = event.get("log_format")
    if text is not None and "log_failure" not in event:
        try:
            return text.format_map(event)
        except Exception:
            pass  # Twisted's own format syntax; its formatter knows it
    return formatEvent(event)


def _failure_text(event: dict) -> str:
    failure = event.get("log_failure")
    if failure is None:
        return ""
    try:
        return failure.getTraceback()
    except Exception:
        return "(the traceback could not be formatted)\n"


def text_observer(out: IO[str]) -> Observer:
    """Twisted's classic log lines, written cheaply to C{out}."""
    clock = _Clock()

    def observe(event: dict) -> None:
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
        line = f"{clock(event.get('log_time'))} [{system}] {_message(event)}\n"
        if "log_failure" in event:
            line += _failure_text(event)
        out.write(line)
        out.flush()

    return observe


_PLAIN = (str, int, float, bool, type(None))


def json_observer(out: IO[str]) -> Observer:
    """One JSON object per line (JSON Lines), for log shippers."""
    clock = _Clock()

    def observe(event: dict) -> None:
        level = event.get("log_level")
        record: dict[str, Any] = {
            "time": clock(event.get("log_time")),
            "level": level.name if level is not None else None,
            "namespace": event.get("log_namespace"),
            "msg": _message(event),
        }
        for key, value in event.items():
            if not key.startswith("log_") and key not in record and isinstance(value, _PLAIN):
                record[key] = value
        if "log_failure" in event:
            record["error"] = _failure_text(event)
        out.write(json.dumps(record) + "\n")
        out.flush()

    return observe


LOG_FORMATS: dict[str, Callable[[IO[str]], Observer]] = {"text": text_observer, "json": json_observer}


class EventRoute:
    """
    The observer of txtus's own log events: Twisted's global publisher,
    or, once L{direct} was called, one observer and a minimum level.
    """

    def __init__(self) -> None:
        self._observer: Observer = globalLogPublisher
        self._level: LogLevel | None = None

    def __call__(self, event: dict) -> None:
        level = self._level
        if level is None:
            self._observer(event)  # the publisher guards its observers itself
        elif event["log_level"] >= level:
            try:
                self._observer(event)
            except Exception:
                # A log that cannot be written (a closed pipe, a full disk)
                # must not fail the request that logged.
                pass

    def direct(self, observer: Observer, level: LogLevel) -> None:
        """Send txtus's events to C{observer} alone, those at C{level} or above."""
        self._observer, self._level = observer, level

    def reset(self) -> None:
        """Back to the global publisher."""
        self._observer, self._level = globalLogPublisher, None


EVENTS = EventRoute()


class Logger(_TwistedLogger):
    """
    C{twisted.logger.Logger} for txtus's modules: events go to L{EVENTS},
    and C{emit} skips Twisted's check that the level is a L{LogLevel}
    (txtus only calls C{info}, C{warn}, C{error}, C{failure}...), which
    re-sorts the level constants on every event.
    """

    def __init__(self, namespace: str | None = None, source: object = None,
                 observer: Observer | None = None) -> None:
        if namespace is None:
            namespace = self._namespaceFromCallingContext()
        super().__init__(namespace, source, EVENTS if observer is None else observer)

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        kwargs.update(log_logger=self, log_level=level, log_namespace=self.namespace, log_source=self.source,
                      log_format=format, log_time=time.time())
        trace = kwargs.get("log_trace")
        if trace is not None:
            trace.append((self, self.observer))  # type: ignore[attr-defined]
        self.observer(kwargs)
