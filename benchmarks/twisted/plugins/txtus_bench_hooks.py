"""
The benchmark's no-op hook handler (C{--hooks-plugin bench-noop}): answers
every event at once with "change nothing", so the C{txtus-hooks} peer
measures what hooks cost the server, not what a hook does.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from txtus.interfaces import IHookHandler, IHookPlugin


@implementer(IHookHandler)
class NoopHooks:
    def invoke_hook(self, request):
        return None


@implementer(IPlugin, IHookPlugin)
class NoopHooksMaker:
    name = "bench-noop"

    def hook_handler(self, reactor):
        return NoopHooks()


noop = NoopHooksMaker()
