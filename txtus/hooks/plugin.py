"""
Plugin hooks (C{--hooks-plugin NAME}): a hook handler found through
Twisted's plugin system, which is to Twisted what Go plugins and gRPC are
to tusd.  Any module in a C{twisted/plugins/} directory on C{sys.path} may
offer one: a module-level object providing C{IPlugin} and
L{txtus.interfaces.IHookPlugin}::

    # twisted/plugins/my_hooks.py
    from twisted.plugin import IPlugin
    from zope.interface import provider
    from txtus.interfaces import IHookPlugin

    @provider(IPlugin, IHookPlugin)
    class my_hooks:
        name = "my-hooks"
        def hook_handler(reactor):
            return MyHookHandler()
"""

from __future__ import annotations

from typing import Any

from twisted.plugin import getPlugins

from txtus.interfaces import IHookHandler, IHookPlugin


def find_plugin(name: str) -> IHookPlugin:
    """
    The hook plugin called C{name}.

    @raise LookupError: there is none; the message lists those there are.
    """
    found = {}
    for plugin in getPlugins(IHookPlugin):
        found.setdefault(plugin.name, plugin)
    if name not in found:
        available = ", ".join(sorted(found)) or "none"
        raise LookupError(f"no hook plugin named {name!r} (found: {available})")
    return found[name]


def plugin_hooks(name: str, reactor: Any) -> IHookHandler:
    """The hook handler the plugin C{name} makes for C{reactor}."""
    handler = find_plugin(name).hook_handler(reactor)
    if not IHookHandler.providedBy(handler):
        raise TypeError(f"hook plugin {name!r} made {handler!r}, which does not provide IHookHandler")
    return handler
