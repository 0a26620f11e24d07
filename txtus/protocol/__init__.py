"""
The tus rules: header parsing, the verbs, the IETF draft, checksums,
concatenation and CORS.

Nothing here knows how twisted.web delivers a request body; that glue is
L{txtus.web}.
"""
