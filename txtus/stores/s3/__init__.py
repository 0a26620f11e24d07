"""
The S3 store: uploads streamed into S3 multipart uploads, in tusd's
s3store layout.

One module per job: L{sigv4} signs requests, L{client} speaks the S3 REST
API over treq, L{store} is the tus store built on them.
"""
