"""
The twisted.web glue: a request that streams its body while it arrives, the
body producers, the resource that turns verbs' results into responses, and
the quarantine of private Twisted API.
"""
